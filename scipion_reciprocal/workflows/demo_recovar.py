"""The demo's RECOVAR chain: pipeline -> analyze -> subsets, comparison with Class3D, map
clustering of the k-means volumes, density, trajectory, outliers, junk detection, a state
volume and the postprocessing of the k-means centre volumes.

On a CPU the particles are downsampled to 24 px inside RECOVAR, with one latent space of
dimension 2 and kernel-regression volumes of 4 bins (about 2 CPU-minutes each), which keeps
the stage to about a quarter of an hour on 2 cores; on a GPU RECOVAR's defaults are used. Volumes from an external embedding run only on a GPU: RECOVAR 1.0.5 cannot
lower that command's kernel bins (its --n-bins crashes), which makes one volume about 13
CPU-minutes; the pipeline with outlier removal (two more pipelines) also runs only on a GPU.
"""
from .wiring import connect, connect_many

CLASS3D_OUTPUT = "outputClasses_job085"
#: CPU settings (see docs/recovar-1.0.5.md for the costs): box RECOVAR works at, kernel bins.
CPU_BOX, CPU_KERNEL_BINS = 24, 4


def recovar_stage(project, result, backends, log, launch):
    """Run the RECOVAR protocols on the demo's simulated particles (``launch``: demo.launch)."""
    from .. import Plugin
    from ..environments import cuda_available

    errors = Plugin.validateBackend("recovar")
    if not backends or errors:
        log("Skipping RECOVAR: %s" % (errors[0] if errors else "--no-backends"))
        return
    gpu = cuda_available()
    run = _Runner(project, result, log, launch, gpu)
    pipeline = run.pipeline()
    analyze = run.analyze(pipeline, len(result.dataset.maps))
    run.subsets(analyze)
    run.compare_with_class3d(analyze)
    run.cluster_centre_volumes(analyze)
    density = run.density(pipeline)
    run.trajectory(pipeline, analyze, density)
    run.outliers(pipeline)
    run.junk(pipeline)
    run.state(pipeline, analyze)
    run.postprocess(analyze)
    if gpu:
        run.external_embedding(pipeline)
        run.pipeline_with_outliers()
    else:
        log("Skipping 'recovar volumes from external embedding' on the CPU (RECOVAR 1.0.5 "
            "cannot lower its kernel bins there: about 13 minutes per volume) and 'recovar "
            "pipeline with outliers' (two more pipelines); they run when a GPU is present.")


class _Runner:
    """Creates, wires and launches the demo's RECOVAR protocols."""

    def __init__(self, project, result, log, launch, gpu):
        self.project, self.result, self.log, self.launch = project, result, log, launch
        self.gpu = gpu
        #: Kernel-regression settings of every volume-making protocol.
        self.volumeOptions = {} if gpu else {"nBins": CPU_KERNEL_BINS}

    def _run(self, protocol, label):
        return self.launch(self.project, protocol, self.result, label, self.log,
                           where=lambda p: p.summary()[0])

    def pipeline(self):
        from ..protocols import ProtRecovarPipeline
        options = dict(zdims="2,4,10") if self.gpu else dict(zdims="2", downsample=CPU_BOX)
        prot = self.project.newProtocol(ProtRecovarPipeline, maskType=2, uninvertData=1,
                                        **options)
        connect(prot.inputParticles, self.result.protocols["import simulated particles"],
                "outputParticles")
        return self._run(prot, "recovar pipeline")

    def analyze(self, pipeline, nStates):
        from ..protocols import ProtRecovarAnalyze
        prot = self.project.newProtocol(ProtRecovarAnalyze, zdim=2, nClusters=nStates,
                                        computeCenters=True, umap=True, nTrajectories=0,
                                        **self.volumeOptions)
        prot.inputPipeline.set(pipeline)
        return self._run(prot, "recovar analyze")

    def subsets(self, analyze):
        from ..protocols import ProtRecovarSubsets
        prot = self.project.newProtocol(ProtRecovarSubsets, clusters="0")
        connect(prot.inputClasses, analyze, "outputClasses")
        return self._run(prot, "recovar extract subsets")

    def compare_with_class3d(self, analyze):
        from ..protocols import ProtReciprocalAnalysis
        prot = self.project.newProtocol(ProtReciprocalAnalysis)
        connect_many(prot.inputClassifications,
                     self.result.protocols["import RELION classifications"], [CLASS3D_OUTPUT])
        connect_many(prot.inputClassifications, analyze, ["outputClasses"])
        return self._run(prot, "reciprocal: recovar k-means vs Class3D")

    def cluster_centre_volumes(self, analyze):
        from ..protocols import ProtMapClustering
        prot = self.project.newProtocol(ProtMapClustering, lowpass=12.0)
        connect_many(prot.inputMaps, analyze, ["outputVolumes"])
        return self._run(prot, "map clustering of recovar centres")

    def density(self, pipeline):
        from ..protocols import ProtRecovarDensity
        # RECOVAR's default alphas: its knee search needs at least 6 of them.
        prot = self.project.newProtocol(ProtRecovarDensity, pcaDim=2, gridPoints=40,
                                        nLocalMaxima=3)
        prot.inputPipeline.set(pipeline)
        return self._run(prot, "recovar conformational density")

    def trajectory(self, pipeline, analyze, density):
        from ..protocols import ProtRecovarTrajectory
        prot = self.project.newProtocol(ProtRecovarTrajectory, zdim=2, startCentre=0,
                                        endCentre=1, nVolumes=3 if self.gpu else 2,
                                        regularized=True, **self.volumeOptions)
        prot.inputPipeline.set(pipeline)
        prot.inputAnalysis.set(analyze)
        prot.inputDensity.set(density)
        return self._run(prot, "recovar trajectory")

    def outliers(self, pipeline):
        from ..protocols import ProtRecovarOutliers
        prot = self.project.newProtocol(ProtRecovarOutliers, zdim=2)
        prot.inputPipeline.set(pipeline)
        return self._run(prot, "recovar outlier detection")

    def junk(self, pipeline):
        from ..protocols import ProtRecovarJunkDetection
        # The demo's 300 particles: 10 clusters of about 30 (RECOVAR's default 100 is for sets
        # of tens of thousands).
        prot = self.project.newProtocol(ProtRecovarJunkDetection, zdim=2, nClusters=10,
                                        minJunkFraction=0.0)
        prot.inputPipeline.set(pipeline)
        return self._run(prot, "recovar junk detection")

    def postprocess(self, analyze):
        from ..protocols import ProtRecovarPostprocess
        prot = self.project.newProtocol(ProtRecovarPostprocess, bfactorMode=1)
        connect(prot.inputVolumes, analyze, "outputVolumes")
        return self._run(prot, "recovar postprocess of the centres")

    def pipeline_with_outliers(self):
        from ..protocols import ProtRecovarPipelineWithOutliers
        prot = self.project.newProtocol(ProtRecovarPipelineWithOutliers, maskType=2,
                                        uninvertData=1, zdims="2,4,10", kRounds=2)
        connect(prot.inputParticles, self.result.protocols["import simulated particles"],
                "outputParticles")
        return self._run(prot, "recovar pipeline with outliers")

    def state(self, pipeline, analyze):
        from ..protocols import ProtRecovarComputeState
        state = self.project.newProtocol(ProtRecovarComputeState, centres="0",
                                         **self.volumeOptions)
        state.inputPipeline.set(pipeline)
        state.inputAnalysis.set(analyze)
        return self._run(state, "recovar compute state")

    def external_embedding(self, pipeline):
        from ..protocols import ProtRecovarExternalEmbedding
        external = self.project.newProtocol(ProtRecovarExternalEmbedding,
                                            embeddingAttribute="_recovar_zdim2", nTargets=2)
        connect(external.inputParticles, pipeline, "outputParticles")
        return self._run(external, "recovar volumes from external embedding")
