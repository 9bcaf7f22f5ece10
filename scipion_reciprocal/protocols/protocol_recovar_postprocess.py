"""RECOVAR postprocess: FSC-filtered (and sharpened) maps from half maps.

Applies to every map of the plugin that has half maps: the pipeline's mean
(``mean_half{1,2}_unfil.mrc``) and every kernel-regression volume (analyze centres, compute
state, trajectory points, volumes from an external embedding: ``<prefix>NNN_half{1,2}_unfil.mrc``),
and to any Scipion volume whose half maps are set (e.g. a RELION refinement).
"""
import os
import shutil

import numpy as np
import pwem.objects as emobj
from pyworkflow.object import Float
from pyworkflow.protocol import params

from ..core.mapsim.similarity import fsc_curve
from ..formats import recovar_files as rf
from ..formats import recovar_postprocess as rp
from ..formats._atomic import atomic_folder
from ..formats.mrc import read_map
from ..plotting.recovar import fsc_figure
from .inputs import describePointer
from .recovar_base import ProtRecovarBase, inputPathIn, savefig

#: RECOVAR's run on every pair (FILES.FOLDER; in estimate mode the run that estimates, whose
#: maps are not used), and in estimate mode one run per volume with its own B-factor.
FILES = rf.Postprocess
BFACTOR_CHOICES = ["none", "estimate", "given"]
BFACTOR_NONE, BFACTOR_ESTIMATE, BFACTOR_GIVEN = range(3)
#: Attributes of the output volumes: global (or median local) resolution and the B-factor.
RESOLUTION_ATTR, BFACTOR_ATTR = "_recovar_resolution", "_recovar_bfactor"


class ProtRecovarPostprocess(ProtRecovarBase):
    """Filters the average of each pair of half maps by their FSC (globally, or by local
    resolution) and optionally sharpens it with a B-factor, given or estimated from the half
    maps (RECOVAR postprocess). Takes a volume or a set of volumes with half maps: the
    pipeline's mean, k-means centres, states, trajectory points. Returns the filtered maps
    with their resolution, and plots each pair's FSC."""
    _label = "recovar postprocess"
    _possibleOutputs = {"outputVolume": emobj.Volume, "outputVolumes": emobj.SetOfVolumes,
                        "outputLocalResolution": emobj.SetOfVolumes}

    # --------------------------- DEFINE param functions ---------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputVolumes", params.PointerParam, pointerClass="Volume,SetOfVolumes",
                      label="Volumes with half maps",
                      help="A volume or a set of volumes whose half maps are known: the "
                           "'recovar pipeline' mean, 'recovar analyze' centres, 'recovar "
                           "compute state' or trajectory volumes, or a refinement's map.")
        form.addParam("local", params.BooleanParam, default=False,
                      label="Local filtering?",
                      help="Filter each region to its local resolution (--local) instead of "
                           "one global FSC filter; also gives local resolution maps.")
        form.addParam("locresSampling", params.FloatParam, default=25.0, condition="local",
                      label="Local resolution sampling (A)",
                      help="Distance between local resolution estimates (--locres-sampling).")
        form.addParam("locresMinres", params.FloatParam, default=50.0, condition="local",
                      label="Lowest local resolution (A)",
                      help="Local resolutions are not worse than this (--locres-minres).")
        form.addParam("bfactorMode", params.EnumParam, choices=BFACTOR_CHOICES,
                      default=BFACTOR_NONE, label="Sharpening",
                      help="none: filter only. estimate: RECOVAR fits the fall-off of each "
                           "pair's FSC-weighted half maps (--estimate-B-factor) and the map is "
                           "sharpened by it (two RECOVAR runs: 1.0.5 applies its own estimate "
                           "in the wrong units). given: the B-factor below.")
        form.addParam("bfactor", params.FloatParam, default=0.0,
                      condition="bfactorMode == %d" % BFACTOR_GIVEN, label="B-factor (A^2)",
                      help="The Fourier amplitudes are multiplied by exp(B s^2 / 4): a positive "
                           "value sharpens (RELION's -100 is +100 here). Passed to RECOVAR "
                           "as B / voxel^2 (--B-factor): 1.0.5 applies it per pixel^2.")
        form.addParam("maskRadius", params.FloatParam, default=0.0, label="Mask radius (A)",
                      help="Spherical mask applied to the result (--mask-radius); 0: none.")
        form.addParam("fscMask", params.PointerParam, pointerClass="Volume", allowsNull=True,
                      label="FSC mask (optional)",
                      help="Mask applied to the half maps before their FSC (--fsc-mask): the "
                           "resolution of the masked region. Same box as the volumes.")
        self._defineExtraParams(form)
        self._defineGpuParams(form)

    # --------------------------- INSERT steps functions ---------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.prepareStep, needsGPU=False)
        self._insertFunctionStep(self.postprocessStep)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    # --------------------------- STEPS functions ----------------------------
    def prepareStep(self):
        """Link every pair of half maps where RECOVAR's batch mode finds them (and convert
        the FSC mask), in the inputs folder renamed when complete."""
        with atomic_folder(self._getExtraPath(rf.INPUTS)) as folder:
            names = rp.write_batch_input(inputPathIn(folder, FILES.BATCH), self._pairs())
            if self.fscMask.get() is not None:
                from pwem.emlib.image import ImageHandler
                ImageHandler().convert(self.fscMask.get(), inputPathIn(folder, FILES.FSC_MASK))
        self.info("Linked %d pairs of half maps" % len(names))

    def postprocessStep(self):
        names = self._names()
        voxel = self.inputList()[0].getSamplingRate()
        mode = self.bfactorMode.get()
        if mode == BFACTOR_ESTIMATE:
            self.runRecovar("postprocess", self._arguments(FILES.BATCH) + ["--estimate-B-factor"],
                            self.outputDir(), outputFlag="--output")
            bfactors = [r.bfactor for r in rp.read_postprocess(
                self.outputDir(), names, self.local.get())]
            self.info("Estimated B-factors (A^2): %s" % ", ".join("%.1f" % b for b in bfactors))
            for name, bfactor, pair in zip(names, bfactors, self._pairs()):
                rp.write_batch_input(self._getExtraPath(FILES.SINGLE_BATCH % name), [pair])
                self.runRecovar("postprocess", self._arguments(FILES.SINGLE_BATCH % name, bfactor,
                                                               voxel),
                                self._getExtraPath(FILES.SINGLE_FOLDER % name),
                                outputFlag="--output")
        else:
            bfactors = [self.bfactor.get() if mode == BFACTOR_GIVEN else None] * len(names)
            self.runRecovar("postprocess", self._arguments(FILES.BATCH, bfactors[0], voxel),
                            self.outputDir(), outputFlag="--output")
        rp.write_bfactors(self._getExtraPath(FILES.BFACTORS), names, bfactors)

    def _arguments(self, batchDir, bfactor=None, voxel=None):
        """RECOVAR postprocess options for the half maps linked in ``batchDir`` (batch mode)."""
        args = [self._getExtraPath(batchDir), "--batch"]
        if self.local.get():
            args += ["--local", "--locres-sampling", self.locresSampling.get(),
                     "--locres-minres", self.locresMinres.get()]
        if bfactor:
            args += ["--B-factor", "%.6g" % rp.recovar_bfactor(bfactor, voxel)]
        if self.maskRadius.get() > 0:
            args += ["--mask-radius", self.maskRadius.get()]
        if self.fscMask.get() is not None:
            args += ["--fsc-mask", self._fscMaskFile()]
        return args

    def createOutputStep(self):
        volumes = self.inputList()
        results = self.readResults()
        for volume, result in zip(volumes, results):
            bad = int(np.count_nonzero(~np.isfinite(read_map(result.filtered)[0])))
            if bad:
                raise ValueError(
                    "RECOVAR postprocess wrote %d non-finite values into the map of '%s'%s: "
                    "nothing is registered; try a smaller B-factor."
                    % (bad, volume.getObjLabel() or volume.getFileName(),
                                      "" if result.bfactor is None
                                      else " (B-factor %.1f A^2)" % result.bfactor))
        with self.plotFolder() as plots:
            self._savePlots(plots, volumes, results)
        filtered, local = [], []
        for volume, result in zip(volumes, results):
            label = volume.getObjLabel() or os.path.basename(volume.getFileName())
            map_ = self._volume(result.filtered, volume, "%s filtered" % label)
            map_.setHalfMaps(self._halfMaps(volume))
            setattr(map_, RESOLUTION_ATTR, Float(result.resolution))
            if result.bfactor is not None:
                setattr(map_, BFACTOR_ATTR, Float(result.bfactor))
            filtered.append(map_)
            if result.local_resolution is not None:
                local.append(self._volume(result.local_resolution, volume,
                                          "%s local resolution" % label))
            self.info("%s: %.2f A%s" % (label, result.resolution, "" if result.bfactor is None
                                        else ", B-factor %.1f A^2" % result.bfactor))
        if isinstance(self.inputVolumes.get(), emobj.SetOfVolumes):
            outputs = {"outputVolumes": self._volumeSet(filtered, "")}
        else:
            outputs = {"outputVolume": filtered[0]}
        if local:
            outputs["outputLocalResolution"] = self._volumeSet(local, "localres")
        self.registerOutputs(outputs, self.inputVolumes)

    @staticmethod
    def _volume(path, like, label):
        volume = emobj.Volume(location=str(path))
        volume.setSamplingRate(like.getSamplingRate())
        volume.setObjLabel(label)
        return volume

    def _volumeSet(self, volumes, suffix):
        out = self._createSetOfVolumes(suffix)
        out.setSamplingRate(volumes[0].getSamplingRate())
        for volume in volumes:
            out.append(volume)
        return out

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        errors = self._validateBackend()
        volumes = self.inputList()
        if not volumes:
            return errors + ["Choose a volume or a set of volumes with half maps."]
        name = describePointer(self.inputVolumes)
        for volume in volumes:
            halves = [h for h in (volume.getHalfMaps() or "").split(",") if h]
            if len(halves) != 2:
                errors.append("%s: volume '%s' has no half maps; postprocess filters by the FSC "
                              "of two half maps." % (name, volume.getObjLabel() or
                                                     volume.getFileName()))
                break
            missing = [h for h in halves if not os.path.exists(h)]
            if missing:
                errors.append("%s: half map %s not found." % (name, missing[0]))
                break
        box = volumes[0].getXDim()
        if self.fscMask.get() is not None and self.fscMask.get().getXDim() != box:
            errors.append("The FSC mask %s is %d px but the volumes are %d px: resample it."
                          % (describePointer(self.fscMask), self.fscMask.get().getXDim(), box))
        if self.maskRadius.get() < 0:
            errors.append("Mask radius cannot be negative (0: no mask).")
        if self.local.get() and not 0 < self.locresSampling.get() <= self.locresMinres.get():
            errors.append("Local resolution sampling must be positive and at most the lowest "
                          "local resolution.")
        return errors

    def _summary(self):
        output = getattr(self, "outputVolumes", None) or getattr(self, "outputVolume", None)
        if output is None:
            return ["Postprocessing not finished yet."]
        items = [output] if isinstance(output, emobj.Volume) else list(output)
        kind = "median local" if self.local.get() else "global"
        return ["%s: %s resolution %.2f A%s" % (v.getObjLabel(), kind,
                                                getattr(v, RESOLUTION_ATTR).get(),
                                                ", B-factor %.1f A^2" % getattr(v, BFACTOR_ATTR).get()
                                                if hasattr(v, BFACTOR_ATTR) else "")
                for v in items] + self.provenanceSummary()

    def _methods(self):
        return ["Maps were filtered by the FSC of their half maps (%s) with RECOVAR "
                "[Gilles2025recovar] postprocess%s." % (
                    "local resolution" if self.local.get() else "global",
                    {BFACTOR_NONE: "", BFACTOR_ESTIMATE: ", sharpened by an estimated B-factor",
                     BFACTOR_GIVEN: ", sharpened with a B-factor of %g A^2" % self.bfactor.get()}
                    [self.bfactorMode.get()])] + self.correctionMethods()

    def _citations(self):
        return ["Gilles2025recovar"]

    # --------------------------- UTILS functions ----------------------------
    def outputDir(self):
        return self._getExtraPath(FILES.FOLDER)

    def inputList(self):
        """The input volumes, as a list (clones: iterating a set reuses one object)."""
        source = self.inputVolumes.get()
        if source is None:
            return []
        if isinstance(source, emobj.SetOfVolumes):
            return [v.clone() for v in source]
        return [source]

    def _names(self):
        return [rp.volume_name(i) for i in range(len(self.inputList()))]

    def _pairs(self):
        return [self._halfMaps(v) for v in self.inputList()]

    def readResults(self):
        """Each volume's :class:`~..formats.recovar_postprocess.PostprocessedMap`, with the
        B-factor (A^2) that was applied and, when estimated, RECOVAR's fit figure."""
        names = self._names()
        if self.bfactorMode.get() == BFACTOR_ESTIMATE:
            results = [rp.read_postprocess(self._getExtraPath(FILES.SINGLE_FOLDER % name),
                                           [rp.volume_name(0)], self.local.get())[0]
                       for name in names]
            estimates = rp.read_postprocess(self.outputDir(), names,
                                            self.local.get())
            for result, estimate in zip(results, estimates):
                result.bfactor_plot = estimate.bfactor_plot
        else:
            results = rp.read_postprocess(self.outputDir(), names, self.local.get())
        for result, bfactor in zip(results, rp.read_bfactors(self._getExtraPath(FILES.BFACTORS),
                                                             names)):
            result.bfactor = bfactor
        return results

    @staticmethod
    def _halfMaps(volume):
        return volume.getHalfMaps().split(",")

    def _fscMaskFile(self):
        return self._getExtraPath(FILES.FSC_MASK)

    def _savePlots(self, plots, volumes, results):
        """FSC of every pair of half maps (masked by the FSC mask when given)."""
        weights = None
        if self.fscMask.get() is not None:
            weights, _ = read_map(self._fscMaskFile())
            weights = weights.astype(np.float32)
        curves, frequency = {}, None
        for i, volume in enumerate(volumes):
            half1, voxel = read_map(self._halfMaps(volume)[0])
            half2, _ = read_map(self._halfMaps(volume)[1])
            label = "%d: %s" % (i, volume.getObjLabel() or os.path.basename(volume.getFileName()))
            frequency, curves[label] = fsc_curve(half1, half2, voxel, weights)
        savefig(plots, FILES.FSC, fsc_figure(frequency, curves, title="half-map FSC"))
        for name, result in zip(self._names(), results):
            if result.bfactor_plot is not None:  # RECOVAR's own figure, copied
                with plots.writing(FILES.BFACTOR_FIT % name) as target:
                    shutil.copyfile(result.bfactor_plot, target)
