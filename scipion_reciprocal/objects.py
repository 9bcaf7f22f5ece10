"""Scipion objects of the plugin (discovered by Scipion in ``<plugin>.objects``)."""
import os

from pwem.objects import EMObject
from pyworkflow.object import Float, Integer, String


class ParticleClassifierModel(EMObject):
    """A trained good/bad particle classifier: the ``.keras`` file and what it expects
    (working box, pixel size, binning, normalisation) plus its held-out test figures."""

    def __init__(self, modelFile=None, **kwargs):
        EMObject.__init__(self, **kwargs)
        self._modelFile = String(modelFile)
        self._box = Integer()
        self._pixelSize = Float()
        self._binning = Float()
        self._normalization = String()
        self._testAccuracy = Float()
        self._testAuc = Float()

    def getModelFile(self):
        return self._modelFile.get()

    def getBox(self):
        return self._box.get()

    def getPixelSize(self):
        return self._pixelSize.get()

    def getBinning(self):
        return self._binning.get()

    def getNormalization(self):
        return self._normalization.get()

    def getTestAccuracy(self):
        return self._testAccuracy.get()

    def getTestAuc(self):
        return self._testAuc.get()

    def setFromFiles(self, modelFile, info, report):
        """Fill from the backend's ``model.json`` and ``test_report.json`` contents."""
        self._modelFile.set(os.path.abspath(modelFile))
        self._box.set(int(info["box"]))
        self._pixelSize.set(float(info["pixel_size"]))
        self._binning.set(float(info["binning"]))
        self._normalization.set(str(info["normalize"]))
        self._testAccuracy.set(report.get("accuracy"))
        self._testAuc.set(report.get("roc_auc"))

    def __str__(self):
        return ("Particle classifier (box %s px at %.2f Å/px, test accuracy %.3f, AUC %.3f)"
                % (self.getBox(), self.getPixelSize() or 0, self.getTestAccuracy() or 0,
                   self.getTestAuc() or 0))
