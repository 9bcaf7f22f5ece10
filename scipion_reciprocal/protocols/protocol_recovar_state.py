"""RECOVAR compute_state: kernel-regression volumes at chosen points of a latent space."""
import os

import numpy as np
import pwem.objects as emobj
from pyworkflow.protocol import params

from ..formats import recovar_files as rf
from ..formats import recovar_results as rr
from ..formats._atomic import atomic_path
from .recovar_base import ProtRecovarBase

FILES = rf.ComputeState
POINTS_FROM_KMEANS, POINTS_FROM_FILE = range(2)


def parseIndices(text):
    """``"0, 2,5"`` -> ``[0, 2, 5]``; empty text -> ``[]``; ValueError on anything else."""
    return [int(v) for v in text.replace(" ", "").split(",") if v]


def readPointsFile(path):
    """``(n, zdim)`` latent points of a whitespace-separated text file (one point per row)."""
    points = np.loadtxt(path, ndmin=2, dtype=np.float64)
    if points.size == 0 or not np.isfinite(points).all():
        raise ValueError("%s holds no points or non-finite values" % path)
    return points


class ProtRecovarComputeState(ProtRecovarBase):
    """Computes a kernel-regression volume at each chosen point of a RECOVAR latent space:
    chosen k-means centres of a 'recovar analyze' run, or the rows of a text file (one point
    per row, as many columns as the latent dimension). Each volume keeps its half maps and
    its latent point (`_recovar_latent`)."""
    _label = "recovar compute state"
    _possibleOutputs = {"outputVolumes": emobj.SetOfVolumes}

    # --------------------------- DEFINE param functions ---------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        self._definePipelineParam(form)
        form.addParam("pointsSource", params.EnumParam, choices=["k-means centres", "text file"],
                      default=POINTS_FROM_KMEANS, label="Latent points from",
                      help="k-means centres of an analyze run, or a text file of points.")
        form.addParam("inputAnalysis", params.PointerParam, pointerClass="ProtRecovarAnalyze",
                      condition="pointsSource == %d" % POINTS_FROM_KMEANS, allowsNull=True,
                      label="RECOVAR analyze", help="The run whose k-means centres are used.")
        form.addParam("centres", params.StringParam, default="",
                      condition="pointsSource == %d" % POINTS_FROM_KMEANS,
                      label="k-means centres",
                      help="Comma-separated centre indices (from 0, as RECOVAR numbers them); "
                           "empty for all.")
        form.addParam("pointsFile", params.FileParam, default="",
                      condition="pointsSource == %d" % POINTS_FROM_FILE, label="Points file",
                      help="Text file, one latent point per row; its number of columns is the "
                           "latent dimension (one the pipeline computed).")
        self._defineVolumeParams(form)
        self._defineMemoryParams(form)
        self._defineExtraParams(form)
        self._defineGpuParams(form)

    # --------------------------- INSERT steps functions ---------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.writePointsStep, needsGPU=False)
        self._insertFunctionStep(self.computeStateStep)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    # --------------------------- STEPS functions ----------------------------
    def writePointsStep(self):
        points = self.latentPoints()
        with atomic_path(self._getExtraPath(FILES.POINTS)) as tmp:
            np.savetxt(tmp, points)
        self.info("%d latent point(s) of dimension %d" % points.shape)

    def computeStateStep(self):
        pipelineDir = self.pipelineRun().pipelineDir()
        args = [pipelineDir, "--latent-points", self._getExtraPath(FILES.POINTS)]
        args += self.volumeArguments(self.pipelineHalfSizes())
        self.runRecovar("compute_state", args, self._getExtraPath(FILES.FOLDER),
                        pipelineDir=pipelineDir)

    def createOutputStep(self):
        volumes = self.kernelVolumeSet(self._getExtraPath(FILES.FOLDER), "state", "states",
                                       "state %d")
        if volumes is None:
            raise rr.RecovarResultError(self._getExtraPath(FILES.FOLDER),
                                        "no state volumes written")
        self.saveChimeraxSeries(volumes, FILES.VOLUMES_CXC, "RECOVAR states")
        with self.plotFolder():
            pass  # no figures: the sealed (empty) plots folder tells the viewer the run ended
        self.registerOutputs({"outputVolumes": volumes}, self.inputPipeline)

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        errors = self._validateBackend()
        try:
            points = self.latentPoints()
        except (ValueError, OSError, rr.RecovarResultError) as exc:
            return errors + self.validatePipeline() + [str(exc)]
        errors += self.validatePipeline([points.shape[1]])
        return errors + (self.validateMemory() if not errors else [])

    def _warnings(self):
        return self.memoryWarnings()

    def _summary(self):
        if not hasattr(self, "outputVolumes"):
            return ["States not computed yet."]
        return ["%d volume(s) at latent points %s" % (
            self.outputVolumes.getSize(),
            "; ".join(str(v._recovar_latent) for v in self.outputVolumes))] + \
            self.provenanceSummary()

    def _methods(self):
        return ["Volumes at chosen points of the RECOVAR [Gilles2025recovar] latent space were "
                "computed by kernel regression."]

    def _citations(self):
        return ["Gilles2025recovar"]

    # --------------------------- UTILS functions ----------------------------
    def memoryRequest(self):
        if self.validatePipeline():
            return None
        return self.pipelineMemoryRequest("compute_state")

    def latentPoints(self):
        """The chosen points ``(n, zdim)``; ValueError naming the parameter when they are bad."""
        if self.pointsSource.get() == POINTS_FROM_FILE:
            path = self.pointsFile.get()
            if not path or not os.path.isfile(path):
                raise ValueError("Points file %r does not exist." % path)
            return readPointsFile(path)
        analysis = self.inputAnalysis.get()
        if analysis is None:
            raise ValueError("Choose the 'recovar analyze' run whose centres are used.")
        centers = rr.read_kmeans(analysis.analysisDir()).centers
        try:
            wanted = parseIndices(self.centres.get() or "") or list(range(len(centers)))
        except ValueError:
            raise ValueError("k-means centres must be integers separated by commas (got %r)."
                             % self.centres.get()) from None
        bad = [i for i in wanted if not 0 <= i < len(centers)]
        if bad:
            raise ValueError("k-means centre(s) %s do not exist: '%s' has centres 0..%d."
                             % (bad, analysis.getObjLabel(), len(centers) - 1))
        return centers[wanted]
