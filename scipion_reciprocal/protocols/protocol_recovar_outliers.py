"""RECOVAR outlier_detection: inlier and outlier particles of a latent space."""
import numpy as np
import pwem.objects as emobj
from pyworkflow.protocol import params

from ..formats import recovar_files as rf
from ..formats import recovar_results as rr
from ..plotting.recovar import latent_figure
from .recovar_base import ProtRecovarBase, savefig

FILES = rf.Outliers


class ProtRecovarOutliers(ProtRecovarBase):
    """Flags particles that sit apart in a RECOVAR latent space or have implausible contrast
    (RECOVAR outlier_detection, several detectors combined) and returns the inliers and the
    outliers as two particle sets with all their metadata."""
    _label = "recovar outlier detection"
    _possibleOutputs = {"outputInliers": emobj.SetOfParticles,
                        "outputOutliers": emobj.SetOfParticles}

    # --------------------------- DEFINE param functions ---------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        self._definePipelineParam(form)
        form.addParam("zdim", params.IntParam, default=4, label="Latent dimension",
                      help="The embedding searched for outliers (RECOVAR --zdim-key).")
        form.addParam("regularized", params.BooleanParam, default=True,
                      label="Use regularised coordinates?",
                      help="No: RECOVAR --no-z-regularization.")
        form.addParam("junkDetection", params.BooleanParam, default=False,
                      label="Junk detection?",
                      help="Also cluster the latent space finely and flag junk-like clusters "
                           "(RECOVAR --use-junk-detection).")
        group = form.addGroup("Contrast", expertLevel=params.LEVEL_ADVANCED)
        group.addParam("lowContrast", params.FloatParam, default=0.1,
                       label="Low contrast threshold",
                       help="Particles with a contrast below this are outliers.")
        group.addParam("highContrast", params.FloatParam, default=3.5,
                       label="High contrast threshold",
                       help="Particles with a contrast above this are outliers.")
        self._defineExtraParams(form)
        self._defineGpuParams(form)

    # --------------------------- INSERT steps functions ---------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.outlierStep)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    # --------------------------- STEPS functions ----------------------------
    def outlierStep(self):
        args = [self.pipelineRun().pipelineDir(), "--zdim-key", self.zdim.get(),
                "--low-contrast-threshold", self.lowContrast.get(),
                "--high-contrast-threshold", self.highContrast.get()]
        if not self.regularized.get():
            args.append("--no-z-regularization")
        if self.junkDetection.get():
            args.append("--use-junk-detection")
        self.runRecovar("outlier_detection", args, self._getExtraPath(FILES.FOLDER),
                        outputFlag="--output-dir", pipelineDir=self.pipelineRun().pipelineDir())

    def createOutputStep(self):
        pipeline = self.pipelineRun()
        ids = pipeline.idMap()
        outliers, inliers = rr.read_outliers(self._getExtraPath(FILES.FOLDER), self.zdim.get(),
                                             n_rows=len(ids))
        self.info("%d inliers, %d outliers of %d particles"
                  % (len(inliers), len(outliers), len(ids)))
        with self.plotFolder() as plots:
            self._savePlot(plots, pipeline, outliers, len(ids))
        source = pipeline.outputParticles
        self.registerOutputs({"outputInliers": self.particleSubset(source, ids[inliers], "_in"),
                              "outputOutliers": self.particleSubset(source, ids[outliers], "_out")},
                             self.inputPipeline)

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        return self._validateBackend() + self.validatePipeline([self.zdim.get()])

    def _summary(self):
        if not hasattr(self, "outputInliers"):
            return ["Outliers not detected yet."]
        return ["zdim %d: %d inliers, %d outliers." % (self.zdim.get(),
                                                       self.outputInliers.getSize(),
                                                       self.outputOutliers.getSize())] + \
            self.provenanceSummary()

    def _methods(self):
        return ["Outlier particles were detected in the RECOVAR [Gilles2025recovar] latent "
                "space of dimension %d." % self.zdim.get()]

    def _citations(self):
        return ["Gilles2025recovar"]

    # --------------------------- UTILS functions ----------------------------
    def _savePlot(self, plots, pipeline, outliers, n):
        coords = rr.read_embedding(pipeline.pipelineDir(), self.zdim.get(),
                                   regularized=self.regularized.get(), n_rows=n).coords
        if coords.shape[1] < 2:
            return
        labels = np.zeros(n, dtype=int)
        labels[outliers] = 1
        savefig(plots, FILES.LATENT,
                latent_figure(coords, labels, title="zdim %d: inliers (0) and outliers (1)"
                              % self.zdim.get()))
