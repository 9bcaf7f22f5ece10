"""RECOVAR junk_particle_detection: junk and clean particles of a latent space."""
import os

import numpy as np
import pwem.objects as emobj
from pyworkflow.protocol import params

from ..formats import recovar_cleaning as rc
from ..formats import recovar_files as rf
from ..formats import recovar_results as rr
from ..plotting.recovar_cleaning import flagged_latent_figure, junk_clusters_figure
from .recovar_base import ProtRecovarBase, savefig

FILES = rf.JunkDetection
METHOD_CHOICES = ["adaptive_threshold", "percentile", "std_based", "consensus"]
METHOD_ADAPTIVE, METHOD_PERCENTILE, METHOD_STD, METHOD_CONSENSUS = range(4)
#: Attribute of the output particles: the k-means cluster of the junk detection
#: (with RECOVAR's diagnostics only).
CLUSTER_ATTR = "_recovar_junk_cluster"


class ProtRecovarJunkDetection(ProtRecovarBase):
    """Finds junk by reconstruction quality (RECOVAR junk_particle_detection): the latent
    space is cut into many k-means clusters; for each, two half maps are reconstructed from
    the particles nearest its centre, and clusters whose half maps agree poorly (low FSC
    resolution, against each other and against the mean) are junk. Returns the junk and the
    clean particles as two sets with all their metadata (and latent coordinates). After a
    'recovar pipeline with outliers' it works on the last round's latent space and returns
    the particles that every round kept."""
    _label = "recovar junk detection"
    _possibleOutputs = {"outputJunk": emobj.SetOfParticles,
                        "outputClean": emobj.SetOfParticles}

    # --------------------------- DEFINE param functions ---------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        self._definePipelineParam(form)
        form.addParam("zdim", params.IntParam, default=10, label="Latent dimension",
                      help="The embedding that is clustered (RECOVAR --zdim); the pipeline must "
                           "have computed it.")
        form.addParam("regularized", params.BooleanParam, default=True,
                      label="Use regularised coordinates?",
                      help="No: the unregularised coordinates (RECOVAR --no-z-regularization).")
        form.addParam("nClusters", params.IntParam, default=100, label="Clusters",
                      help="k-means clusters of the latent space (RECOVAR --n-clusters); each "
                           "costs two small reconstructions. Junk is found cluster by cluster, "
                           "so clusters should be small enough to hold junk alone.")
        form.addParam("particlesPerCluster", params.IntParam, default=0,
                      label="Particles per half map",
                      help="Particles nearest each centre used for each of its half maps "
                           "(--n-particles-per-cluster); 0: RECOVAR's choice, min(100, "
                           "max(10, particles / clusters)).")
        group = form.addGroup("Decision", expertLevel=params.LEVEL_ADVANCED)
        group.addParam("method", params.EnumParam, choices=METHOD_CHOICES,
                       default=METHOD_ADAPTIVE, label="Method",
                       help="How clusters are declared junk from their FSC scores "
                            "(--junk-detection-method): adaptive_threshold (below the elbow of "
                            "the sorted scores; the cluster at the elbow is kept), percentile "
                            "(below a percentile), std_based (below mean - k std) or "
                            "consensus of the methods. The per-cluster plot (with RECOVAR's "
                            "diagnostics) shows where the cut fell.")
        group.addParam("percentile", params.FloatParam, default=25.0,
                       condition="method == %d" % METHOD_PERCENTILE, label="Percentile",
                       help="Clusters below this percentile of the scores are junk "
                            "(--percentile-threshold).")
        group.addParam("stdThreshold", params.FloatParam, default=2.0,
                       condition="method == %d" % METHOD_STD, label="Standard deviations",
                       help="Clusters more than this many standard deviations below the mean "
                            "score are junk (--std-threshold).")
        group.addParam("minJunkFraction", params.FloatParam, default=0.1,
                       label="Minimum junk fraction",
                       help="At least this fraction of the clusters is declared junk "
                            "(--min-junk-fraction): RECOVAR always flags the worst clusters, so "
                            "set 0 on data without junk.")
        group.addParam("maxJunkFraction", params.FloatParam, default=0.8,
                       label="Maximum junk fraction",
                       help="At most this fraction of the clusters is junk "
                            "(--max-junk-fraction).")
        form.addParam("diagnostics", params.BooleanParam, default=False,
                      expertLevel=params.LEVEL_ADVANCED,
                      label="Save RECOVAR's diagnostics?",
                      help="Also keep RECOVAR's per-cluster scores and figures "
                           "(--save-all-plots): the protocol then plots each cluster's "
                           "resolution and size and stores each particle's cluster. Adds a "
                           "UMAP of all particles and a dozen figures: slower.")
        self._defineExtraParams(form)
        self._defineGpuParams(form)

    # --------------------------- INSERT steps functions ---------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.junkStep)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    # --------------------------- STEPS functions ----------------------------
    def junkStep(self):
        args = [self.pipelineRun().pipelineDir(), "--zdim", self.zdim.get(),
                "--n-clusters", self.nClusters.get(),
                "--junk-detection-method", METHOD_CHOICES[self.method.get()],
                "--min-junk-fraction", self.minJunkFraction.get(),
                "--max-junk-fraction", self.maxJunkFraction.get()]
        if self.particlesPerCluster.get() > 0:
            args += ["--n-particles-per-cluster", self.particlesPerCluster.get()]
        if self.method.get() == METHOD_PERCENTILE:
            args += ["--percentile-threshold", self.percentile.get()]
        if self.method.get() == METHOD_STD:
            args += ["--std-threshold", self.stdThreshold.get()]
        if not self.regularized.get():
            args.append("--no-z-regularization")
        if self.diagnostics.get():
            args.append("--save-all-plots")
        self.runRecovar("junk_particle_detection", args, self.junkDir(),
                        pipelineDir=self.pipelineRun().pipelineDir())

    def createOutputStep(self):
        pipeline = self.pipelineRun()
        result = self.readResult()
        ids = pipeline.idMap()
        junk_rows, clean_rows = pipeline.unitsToRows(result.junk), pipeline.unitsToRows(result.good)
        self.info("%d junk and %d clean particles (%d and %d rows)"
                  % (len(result.junk), len(result.good), len(junk_rows), len(clean_rows)))
        with self.plotFolder() as plots:
            self._savePlots(plots, pipeline, result)
        clusters = None if result.labels is None else pipeline.rowValues(result.labels)
        source = pipeline.outputParticles
        outputs = {}
        for name, rows, suffix in (("outputJunk", junk_rows, "_junk"),
                                   ("outputClean", clean_rows, "_clean")):
            extra = None if clusters is None else {CLUSTER_ATTR: ("Integer", clusters[rows].tolist())}
            outputs[name] = self.particleSubset(source, ids[rows], suffix, extra)
        self.registerOutputs(outputs, self.inputPipeline)

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        errors = self._validateBackend() + self.validatePipeline([self.zdim.get()])
        if self.nClusters.get() < 2:
            errors.append("Ask for at least 2 clusters.")
        pipeline = self.getAttributeValue("inputPipeline")
        if not errors and pipeline is not None and self.nClusters.get() > pipeline.unitCount():
            errors.append("%d clusters for %d particles: ask for fewer clusters."
                          % (self.nClusters.get(), pipeline.unitCount()))
        if self.particlesPerCluster.get() < 0:
            errors.append("Particles per half map cannot be negative (0: RECOVAR's choice).")
        low, high = self.minJunkFraction.get(), self.maxJunkFraction.get()
        if not 0 <= low <= high <= 1:
            errors.append("Junk fractions must satisfy 0 <= minimum <= maximum <= 1 (got %g "
                          "and %g)." % (low, high))
        return errors

    def _summary(self):
        if not hasattr(self, "outputJunk"):
            return ["Junk not detected yet."]
        return ["zdim %d, %d clusters: %d junk and %d clean particles."
                % (self.zdim.get(), self.nClusters.get(), self.outputJunk.getSize(),
                   self.outputClean.getSize())] + self.provenanceSummary()

    def _methods(self):
        return ["Junk particles were detected with RECOVAR [Gilles2025recovar] by the half-map "
                "FSC of reconstructions from %d k-means clusters of its latent space of "
                "dimension %d (%s)." % (self.nClusters.get(), self.zdim.get(),
                                        METHOD_CHOICES[self.method.get()])] + \
            self.correctionMethods()

    def _citations(self):
        return ["Gilles2025recovar"]

    # --------------------------- UTILS functions ----------------------------
    def junkDir(self):
        return self._getExtraPath(FILES.FOLDER)

    def readResult(self):
        """The junk and good RECOVAR particles (rows, or tilt-series particles)."""
        pipeline = self.pipelineRun()
        halfsets = rr.load_pickle(os.path.join(pipeline.pipelineDir(), rr.PARTICLES_HALFSETS_PKL))
        return rc.read_junk_detection(self.junkDir(), self.zdim.get(), halfsets=halfsets,
                                      n_rows=pipeline.unitCount())

    def _savePlots(self, plots, pipeline, result):
        coords = pipeline.latentCoords(self.zdim.get(), self.regularized.get())
        groups = np.zeros(len(coords), dtype=int)
        groups[result.junk] = 1
        savefig(plots, FILES.LATENT,
                flagged_latent_figure(coords, groups, ["clean", "junk"],
                                      "zdim %d: junk detection" % self.zdim.get()))
        if result.clusters is not None:
            savefig(plots, FILES.CLUSTERS, junk_clusters_figure(result.clusters))
