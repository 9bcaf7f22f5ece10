"""Train the good/bad particle classifier (TensorFlow backend)."""
import os
from enum import Enum

from pyworkflow.protocol import params

from ..core.picking import (MODEL_FILE, read_history, read_model_info, read_test_report,
                            read_test_scores)
from ..objects import ParticleClassifierModel
from ..plotting.classifier import confusion_figure, learning_curves_figure, roc_figure
from .classifier_base import PARTICLES_CSV, PLOTS_DIR, ProtClassifierBase
from .inputs import describePointer

MODEL_DIR = "model"   # the backend's train --out-dir (core.picking names its files)
LEARNING_CURVES_PNG = "learning_curves.png"
ROC_PNG = "roc.png"
CONFUSION_PNG = "confusion.png"


class TrainOutputs(Enum):
    outputModel = ParticleClassifierModel


class ProtTrainParticleClassifier(ProtClassifierBase):
    """Trains a CNN that tells good particles from bad ones (ice, carbon, empty boxes), from
    particles sorted into good and bad (e.g. by 2D class selection). Images are read straight
    from the MRC stacks in batches, resampled to the working box, split into train,
    validation and test sets (shuffled, stratified) and the model is evaluated on the
    held-out test set."""
    _label = "train particle classifier"
    _possibleOutputs = TrainOutputs

    # --------------------------- DEFINE param functions ---------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("goodParticles", params.PointerParam, pointerClass="SetOfParticles",
                      label="Good particles", help="Particles of the classes you keep.")
        form.addParam("badParticles", params.PointerParam, pointerClass="SetOfParticles",
                      label="Bad particles",
                      help="Particles of the classes you discard (ice, carbon, junk). Sets of "
                           "another box or pixel size are resampled to the working box.")
        form.addParam("box", params.IntParam, default=64, label="Working box (px)",
                      help="Box the network sees, after binning (even, >= 24). 64 keeps "
                           "training fast; the particle should fill most of it.")
        form.addParam("normalize", params.BooleanParam, default=True,
                      label="Normalise each particle?",
                      help="Zero mean and unit standard deviation per box, so the model does "
                           "not learn the intensity scale of a dataset.")
        group = form.addGroup("Training")
        group.addParam("augment", params.BooleanParam, default=True, label="Augment?",
                       help="Random 90-degree rotations, flips and small shifts of the training "
                            "images: particles have no preferred in-plane orientation.")
        group.addParam("balance", params.BooleanParam, default=True, label="Balance classes?",
                       help="Weight the classes so that the larger does not dominate.")
        group.addParam("fractions", params.StringParam, default="0.7,0.15,0.15",
                       label="Train, validation, test fractions",
                       help="Shuffled, stratified split; the test set is only used for the "
                            "final report.")
        group.addParam("seed", params.IntParam, default=0, label="Random seed",
                       help="Seed of the split, the augmentation and the weights: the same seed "
                            "gives the same model.")
        group.addParam("epochs", params.IntParam, default=20, label="Epochs",
                       help="Maximum number of passes over the training set.")
        group.addParam("patience", params.IntParam, default=3, label="Early stopping patience",
                       help="Stop when the validation loss has not improved for this many "
                            "epochs; the best epoch's weights are kept.")
        group.addParam("learningRate", params.FloatParam, default=1e-3, label="Learning rate",
                       help="Initial Adam learning rate; it decays along a cosine over the epochs.")
        group.addParam("batchSize", params.IntParam, default=64, label="Batch size",
                       help="Images per training step. Larger is faster on a GPU and needs more "
                            "memory.")
        self._defineGpuParams(form)
        self._defineThreadsParam(form)

    # --------------------------- INSERT steps functions ---------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.convertInputStep, needsGPU=False)
        self._insertFunctionStep(self.trainStep)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    # --------------------------- STEPS functions ----------------------------
    def convertInputStep(self):
        with self.resultFolder(first=True) as out, out.writing(PARTICLES_CSV) as tmp:
            self.writeParticleTable(tmp, [self.goodParticles.get(), self.badParticles.get()],
                                    labels=[1, 0])

    def trainStep(self):
        args = ["--particles", self._getExtraPath(PARTICLES_CSV), "--out-dir", self._modelDir(),
                "--box", self.box.get(), "--fractions", self.fractions.get(), "--seed",
                self.seed.get(), "--epochs", self.epochs.get(), "--patience", self.patience.get(),
                "--learning-rate", self.learningRate.get(), "--batch-size", self.batchSize.get()]
        if self.normalize.get():
            args.append("--normalize")
        if self.augment.get():
            args.append("--augment")
        if self.balance.get():
            args.append("--balance")
        self.runClassifierInto(MODEL_DIR, "train", " ".join(str(a) for a in args))

    def createOutputStep(self):
        modelFile = os.path.join(self._modelDir(), MODEL_FILE)
        info, report = read_model_info(modelFile), read_test_report(self._modelDir())
        scores = read_test_scores(self._modelDir())
        with self.resultFolder(last=True) as out:
            out.save_figure("%s/%s" % (PLOTS_DIR, LEARNING_CURVES_PNG),
                            learning_curves_figure(read_history(self._modelDir())))
            out.save_figure("%s/%s" % (PLOTS_DIR, ROC_PNG),
                            roc_figure(scores["label"], scores["score"]))
            out.save_figure("%s/%s" % (PLOTS_DIR, CONFUSION_PNG),
                            confusion_figure(scores["label"], scores["score"]))
        model = ParticleClassifierModel()
        model.setFromFiles(modelFile, info, report)
        self._defineOutputs(**{TrainOutputs.outputModel.name: model})
        self._defineSourceRelation(self.goodParticles, model)
        self._defineSourceRelation(self.badParticles, model)

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        errors = self._validateBackend()
        errors += self.emptySetErrors({describePointer(self.goodParticles): self.goodParticles,
                                       describePointer(self.badParticles): self.badParticles})
        if self.box.get() < 24 or self.box.get() % 2:
            errors.append("The working box must be even and at least 24 px (got %d)." % self.box.get())
        try:
            fractions = [float(f) for f in self.fractions.get().split(",")]
            if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
                raise ValueError
        except ValueError:
            errors.append("Fractions must be three positive numbers adding to 1 (got %r)."
                          % self.fractions.get())
        return errors

    def _summary(self):
        if not hasattr(self, TrainOutputs.outputModel.name):
            return ["Not trained yet."]
        report = read_test_report(self._modelDir())
        return ["%s" % self.outputModel,
                "Held-out test set: %d good, %d bad; precision %s, recall %s"
                % (report["n"]["good"], report["n"]["bad"], _fmt(report["precision"]),
                   _fmt(report["recall"]))]

    def _methods(self):
        return ["A convolutional network was trained to separate good from bad particles "
                "(working box %d px), using TensorFlow [Abadi2016tensorflow]." % self.box.get()]

    def _citations(self):
        return ["Abadi2016tensorflow", "Wang2016deeppicker"]

    # --------------------------- UTILS functions ----------------------------
    def _modelDir(self):
        return self._getExtraPath(MODEL_DIR)


def _fmt(value):
    return "n/a" if value is None else "%.3f" % value
