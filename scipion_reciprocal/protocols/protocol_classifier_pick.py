"""Re-pick micrographs with a trained good/bad particle classifier (sliding window)."""
import os

import pwem.objects as emobj
from pyworkflow.object import Float
from pyworkflow.protocol import params

from ..convert.set_sql import read_set_items
from ..core.picking import (COORDINATES, REJECTED, read_picks, read_score_map,
                            write_micrograph_table)
from ..formats.mrc import read_map
from ..plotting.classifier import picks_figure, score_map_figure
from .classifier_base import PLOTS_DIR, ProtClassifierBase, addModelParam
from .inputs import describePointer
from .protocol_classifier_classify import SCORE_ATTRIBUTE

MICROGRAPHS_CSV = "micrographs.csv"
PICKS_DIR = "picks"   # the backend's pick --out-dir (core.picking names its files)
PICKS_PNG = "picks_{micrograph}.png"
SCORE_MAP_PNG = "score_map_{micrograph}.png"
MAX_PLOTTED = 4
# A dict, not an Enum: Enum members with equal values (two SetOfCoordinates) become aliases.
OUTPUTS = {"outputCoordinates": emobj.SetOfCoordinates, "outputRejected": emobj.SetOfCoordinates}


class ProtPickMicrographs(ProtClassifierBase):
    """Scans every micrograph with a trained classifier: the micrograph is binned to the
    model's pixel size, normalised, and every window (stride in binned pixels) is scored in
    memory, batched straight into the model. Peaks of the score map above the threshold,
    thinned by non-maximum suppression, become the picks; RELION coordinate STAR files are
    written per micrograph too."""
    _label = "pick micrographs"
    _possibleOutputs = OUTPUTS

    # --------------------------- DEFINE param functions ---------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputMicrographs", params.PointerParam, pointerClass="SetOfMicrographs",
                      label="Micrographs", help="Micrographs to pick (any pixel size: they are "
                                                "binned to the model's).")
        addModelParam(form)
        form.addParam("stride", params.IntParam, default=0, label="Stride (binned px)",
                      help="Step between scored windows, in the model's pixels. 0 uses a "
                           "quarter of the box. Smaller is more precise and slower.")
        form.addParam("threshold", params.FloatParam, default=0.5, label="Score threshold",
                      help="Lowest score (probability of a good particle) of a pick.")
        form.addParam("minDistance", params.FloatParam, default=0.0,
                      label="Minimum distance (binned px)",
                      help="Picks closer than this are merged (non-maximum suppression). 0 "
                           "uses half the box.")
        form.addParam("maxPicks", params.IntParam, default=0, label="Maximum picks per micrograph",
                      help="Keep only the best-scored picks (0: no limit).")
        form.addParam("keepRejected", params.BooleanParam, default=False,
                      label="Keep rejected peaks?",
                      help="Also output the peaks below the threshold as a second set of "
                           "coordinates (and rejected.csv), to see what the model turned down.")
        form.addParam("invertContrast", params.BooleanParam, default=True,
                      label="Invert contrast?",
                      help="Raw micrographs show protein dark; extracted RELION particles show "
                           "it white. Invert when the model was trained on such particles.")
        self._defineGpuParams(form)
        self._defineThreadsParam(form)

    # --------------------------- INSERT steps functions ---------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.convertInputStep, needsGPU=False)
        self._insertFunctionStep(self.pickStep)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    # --------------------------- STEPS functions ----------------------------
    def convertInputStep(self):
        micrographs = self.inputMicrographs.get()
        items = read_set_items(micrographs.getFileName(), ["_filename", "_micName"])
        with self.resultFolder(first=True) as out, out.writing(MICROGRAPHS_CSV) as tmp:
            write_micrograph_table(tmp, [os.path.abspath(f) for f in items["_filename"]],
                                   micrographs.getSamplingRate(), self._micNames(items))

    def pickStep(self):
        args = ["--model", self.inputModel.get().getModelFile(), "--micrographs",
                self._getExtraPath(MICROGRAPHS_CSV), "--out-dir", self._picksDir(),
                "--threshold", self.threshold.get(), "--save-score-maps"]
        for option, value in (("--stride", self.stride.get()), ("--min-distance", self.minDistance.get()),
                              ("--max-picks", self.maxPicks.get())):
            if value:
                args += [option, value]
        if self.keepRejected.get():
            args.append("--keep-rejected")
        if self.invertContrast.get():
            args.append("--invert-contrast")
        self.runClassifierInto(PICKS_DIR, "pick", " ".join(str(a) for a in args))

    def createOutputStep(self):
        micrographs = self.inputMicrographs.get()
        picks = read_picks(self._picksDir())
        picked, rejectedName = OUTPUTS
        outputs = {picked: self._coordinates(micrographs, picks, "")}
        if self.keepRejected.get():
            rejected = read_picks(os.path.join(self._picksDir(), REJECTED))
            outputs[rejectedName] = self._coordinates(micrographs, rejected, "rejected")
        with self.resultFolder(last=True) as out:
            self._savePlots(out, micrographs, picks)
        self._defineOutputs(**outputs)
        for coordinates in outputs.values():
            self._defineSourceRelation(self.inputMicrographs, coordinates)
            self._defineSourceRelation(self.inputModel, coordinates)
        self.info("%d picks on %d micrographs" % (len(picks), micrographs.getSize()))

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        errors = self._validateBackend()
        micrographs = self.inputMicrographs.get()
        model = self.inputModel.get()
        if micrographs is not None and model is not None:
            dims = micrographs.getDim()
            binnedBox = model.getBox() * model.getPixelSize() / micrographs.getSamplingRate()
            if dims and min(dims[:2]) < binnedBox:
                errors.append("%s: micrographs of %dx%d px are smaller than the model's box "
                              "(%d px at their pixel size)." % (describePointer(self.inputMicrographs),
                                                               dims[0], dims[1], binnedBox))
        return errors

    def _warnings(self):
        micrographs, model = self.inputMicrographs.get(), self.inputModel.get()
        if micrographs is None or model is None:
            return []
        if abs(micrographs.getSamplingRate() * (model.getBinning() or 1) - model.getPixelSize()) > 1e-3:
            return ["The model was trained at %.3f Å/px; the micrographs (%.3f Å/px) will be "
                    "resampled to it." % (model.getPixelSize(), micrographs.getSamplingRate())]
        return []

    def _summary(self):
        if not hasattr(self, "outputCoordinates"):
            return ["Not picked yet."]
        return ["%d picks on %d micrographs (threshold %g); RELION coordinate files in %s"
                % (self.outputCoordinates.getSize(), self.inputMicrographs.get().getSize(),
                   self.threshold.get(), os.path.join(self._picksDir(), COORDINATES))]

    def _methods(self):
        return ["Micrographs were re-picked with a trained particle classifier scanned as a "
                "sliding window (threshold %g)." % self.threshold.get()]

    def _citations(self):
        return ["Wang2016deeppicker", "Abadi2016tensorflow"]

    # --------------------------- UTILS functions ----------------------------
    def _coordinates(self, micrographs, picks, suffix):
        """A SetOfCoordinates of ``picks`` (micrograph, x, y, score), the score kept."""
        byName = {name: group for name, group in picks.groupby("micrograph")}
        coordinates = self._createSetOfCoordinates(micrographs, suffix=suffix)
        coordinates.setBoxSize(self._boxInMicrographPixels())
        coordinate = emobj.Coordinate()
        setattr(coordinate, SCORE_ATTRIBUTE, Float())
        items = read_set_items(micrographs.getFileName(), ["_micName"])
        for micId, name in zip(items["id"], self._micNames(items)):
            for row in byName.get(name, picks.iloc[:0]).itertuples():
                coordinate.cleanObjId()
                coordinate.setPosition(int(round(row.x)), int(round(row.y)))
                coordinate.setMicId(int(micId))
                getattr(coordinate, SCORE_ATTRIBUTE).set(float(row.score))
                coordinates.append(coordinate)
        return coordinates

    def _picksDir(self):
        return self._getExtraPath(PICKS_DIR)

    @staticmethod
    def _micNames(items):
        return [name if isinstance(name, str) and name else "mic%06d" % micId
                for micId, name in zip(items["id"], items["_micName"])]

    def _boxInMicrographPixels(self):
        model = self.inputModel.get()
        return int(round(model.getBox() * model.getPixelSize()
                         / self.inputMicrographs.get().getSamplingRate()))

    def _savePlots(self, out, micrographs, picks):
        """Picks over the first micrographs, and their score maps."""
        items = read_set_items(micrographs.getFileName(), ["_filename", "_micName"])
        for path, name in list(zip(items["_filename"], self._micNames(items)))[:MAX_PLOTTED]:
            image, _ = read_map(path)
            image = image[0] if image.ndim == 3 else image
            mine = picks[picks["micrograph"] == name]
            out.save_figure("%s/%s" % (PLOTS_DIR, PICKS_PNG.format(micrograph=name)),
                            picks_figure(image, mine, self._boxInMicrographPixels(), title=name))
            scores, y, x = read_score_map(self._picksDir(), name)
            out.save_figure("%s/%s" % (PLOTS_DIR, SCORE_MAP_PNG.format(micrograph=name)),
                            score_map_figure(scores, y, x, micrograph=image, title=name))
