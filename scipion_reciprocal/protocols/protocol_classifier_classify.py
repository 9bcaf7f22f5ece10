"""Score particles with a trained good/bad classifier and split them by a threshold."""
import numpy as np
import pandas as pd
import pwem.objects as emobj
from pyworkflow.object import Float
from pyworkflow.protocol import params

from ..core.picking import read_scores
from ..formats.mrc import read_images
from ..plotting.classifier import gallery_figure, score_histogram_figure
from .classifier_base import PARTICLES_CSV, PLOTS_DIR, ProtClassifierBase, addModelParam
from .inputs import describePointer

IDS_FILE = "particle_ids.npy"
SCORES_CSV = "scores.csv"
SCORE_HISTOGRAM_PNG = "score_histogram.png"
GALLERY_PNG = "gallery_{end}.png"   # end: highest, lowest
SCORE_ATTRIBUTE = "_classifierScore"
GALLERY_SIZE = 24
# A dict, not an Enum: Enum members with equal values (two SetOfParticles) become aliases.
OUTPUTS = {"outputGood": emobj.SetOfParticles, "outputBad": emobj.SetOfParticles}


class ProtClassifyParticles(ProtClassifierBase):
    """Scores every particle with a trained classifier (probability of being good) and
    splits the set at a threshold. The score is kept on every particle
    (_classifierScore). To try another threshold, change it and continue the protocol:
    only the cheap final step runs again."""
    _label = "classify particles"
    _possibleOutputs = OUTPUTS

    # --------------------------- DEFINE param functions ---------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputParticles", params.PointerParam, pointerClass="SetOfParticles",
                      label="Particles", help="Particles to score.")
        addModelParam(form)
        form.addParam("threshold", params.FloatParam, default=0.5, label="Threshold",
                      help="Particles scoring at least this go to the good set. Changing it "
                           "and continuing re-runs only the final step.")
        self._defineGpuParams(form)
        self._defineThreadsParam(form)

    # --------------------------- INSERT steps functions ---------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.convertInputStep, needsGPU=False)
        self._insertFunctionStep(self.predictStep)
        # The threshold is this step's argument: a new value re-runs this step only.
        self._insertFunctionStep(self.createOutputStep, self.threshold.get(), needsGPU=False)

    # --------------------------- STEPS functions ----------------------------
    def convertInputStep(self):
        with self.resultFolder(first=True) as out:
            with out.writing(PARTICLES_CSV) as tmp:
                ids = self.writeParticleTable(tmp, [self.inputParticles.get()])
            with out.writing(IDS_FILE) as tmp, open(tmp, "wb") as handle:
                np.save(handle, ids)

    def predictStep(self):
        with self.resultFolder() as out:
            self.runClassifier("predict", "--model %s --particles %s --out %s" % (
                self.inputModel.get().getModelFile(), self._getExtraPath(PARTICLES_CSV),
                self._getExtraPath(SCORES_CSV)))
            out.add(SCORES_CSV)

    def createOutputStep(self, threshold):
        ids = np.load(self._getExtraPath(IDS_FILE))
        scores = dict(zip(ids.tolist(), read_scores(self._getExtraPath(SCORES_CSV), len(ids))))
        particles = self.inputParticles.get()
        outputs = {}
        for name, keep in zip(OUTPUTS, (lambda s: s >= threshold, lambda s: s < threshold)):
            subset = self._createSetOfParticles(suffix="_%s_%g" % (name[6:].lower(), threshold))
            subset.copyInfo(particles)
            subset.copyItems(particles, updateItemCallback=self._setScore(scores),
                             itemSelectedCallback=lambda p, k=keep: k(scores[p.getObjId()]))
            outputs[name] = subset
            self.info("%s: %d particles (threshold %g)" % (name, subset.getSize(), threshold))
        with self.resultFolder(last=True) as out:
            self._savePlots(out, np.array([scores[i] for i in ids]), threshold)
        self._defineOutputs(**outputs)
        for subset in outputs.values():
            self._defineSourceRelation(self.inputParticles, subset)
            self._defineSourceRelation(self.inputModel, subset)

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        return self._validateBackend() + self.emptySetErrors(
            {describePointer(self.inputParticles): self.inputParticles})

    def _summary(self):
        if not hasattr(self, "outputGood"):
            return ["Not scored yet."]
        return ["%d good and %d bad particles at threshold %g."
                % (self.outputGood.getSize(), self.outputBad.getSize(), self.threshold.get())]

    def _methods(self):
        return ["Particles were scored with a trained good/bad classifier and split at %g."
                % self.threshold.get()]

    def _citations(self):
        return ["Abadi2016tensorflow"]

    # --------------------------- UTILS functions ----------------------------
    def _savePlots(self, out, scores, threshold):
        """Score histogram, and galleries of the highest- and lowest-scored particles."""
        out.save_figure("%s/%s" % (PLOTS_DIR, SCORE_HISTOGRAM_PNG),
                        score_histogram_figure(scores, threshold))
        table = pd.read_csv(self._getExtraPath(PARTICLES_CSV))
        order = np.argsort(scores, kind="stable")
        for name, rows, highest in (("highest", order[::-1][:GALLERY_SIZE], True),
                                    ("lowest", order[:GALLERY_SIZE], False)):
            images = np.stack([read_images(table["stack"][r], [int(table["index"][r])])[0]
                               for r in rows])
            out.save_figure("%s/%s" % (PLOTS_DIR, GALLERY_PNG.format(end=name)),
                            gallery_figure(images, scores[rows], n=len(rows), highest=highest,
                                           title="%s scores" % name))

    @staticmethod
    def _setScore(scores):
        def update(particle, row=None):
            setattr(particle, SCORE_ATTRIBUTE, Float(scores[particle.getObjId()]))
        return update
