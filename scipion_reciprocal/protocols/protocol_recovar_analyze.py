"""RECOVAR analyze: k-means of the latent space, UMAP, trajectories and centre volumes."""
import os

import pwem.objects as emobj
from pyworkflow.object import Pointer
from pyworkflow.protocol import params

from ..convert.set_sql import fill_classes
from ..formats import recovar_files as rf
from ..formats import recovar_results as rr
from ..plotting.recovar import latent_figure, umap_figure
from .recovar_base import ProtRecovarBase, savefig

FILES = rf.Analyze
OUTPUTS = {"outputClasses": emobj.SetOfClasses3D, "outputVolumes": emobj.SetOfVolumes,
           "outputTrajectory1": emobj.SetOfVolumes}


class ProtRecovarAnalyze(ProtRecovarBase):
    """Clusters the particles of a RECOVAR pipeline with k-means in one latent space and
    returns the clusters as 3D classes (class id = k-means index + 1), optionally with a
    kernel-regression volume at every centre (the class representative), UMAP of the latent
    space and trajectories between centres. The classes can be compared with a Class3D run
    in 'reciprocal class analysis' and split with 'recovar extract subsets'."""
    _label = "recovar analyze"
    _possibleOutputs = OUTPUTS

    # --------------------------- DEFINE param functions ---------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        self._definePipelineParam(form)
        form.addParam("zdim", params.IntParam, default=4, label="Latent dimension",
                      help="One of the pipeline's latent dimensions. With 1, RECOVAR always also "
                           "computes one trajectory (6 volumes); use 2 or more for k-means alone.")
        form.addParam("nClusters", params.IntParam, default=20, label="k-means clusters",
                      help="Number of k-means clusters. For sampling the latent space RECOVAR "
                           "suggests many (20); for discrete states use their expected number.")
        form.addParam("computeCenters", params.BooleanParam, default=True,
                      label="Compute centre volumes?",
                      help="A kernel-regression volume at every k-means centre (used as class "
                           "representatives). This is the slow part: minutes per centre on a "
                           "GPU at real sizes, about 6 min per centre at 32 px on a CPU.")
        form.addParam("nTrajectories", params.IntParam, default=0, label="Trajectories",
                      help="Trajectories between k-means centres (0 for none); each costs "
                           "6 kernel-regression volumes.")
        form.addParam("umap", params.BooleanParam, default=True, label="Compute UMAP?",
                      help="A 2D UMAP embedding of the latent space for the plots (skipped for "
                           "zdim 1).")
        form.addParam("nVolsAlongPath", params.IntParam, default=6, condition="nTrajectories > 0",
                      label="Volumes per trajectory",
                      help="Kernel-regression volumes computed along each trajectory.")
        self._defineVolumeParams(form)
        group = form.addGroup("k-means", expertLevel=params.LEVEL_ADVANCED)
        group.addParam("normalizeKmeans", params.BooleanParam, default=False,
                       label="Normalise before k-means?",
                       help="Scale each latent coordinate to unit variance before k-means.")
        self._defineMemoryParams(form)
        self._defineExtraParams(form)
        self._defineGpuParams(form)

    # --------------------------- INSERT steps functions ---------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.analyzeStep)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    # --------------------------- STEPS functions ----------------------------
    def analyzeStep(self):
        args = [self.pipelineRun().pipelineDir(), "--zdim", self.zdim.get(),
                "--n-clusters", self.nClusters.get(), "--n-trajectories", self.nTrajectories.get(),
                "--n-vols-along-path", self.nVolsAlongPath.get()]
        args += self.volumeArguments(self.pipelineHalfSizes())
        if not self.computeCenters.get():
            args.append("--skip-centers")
        if not self.umap.get():
            args.append("--skip-umap")
        if self.normalizeKmeans.get():
            args.append("--normalize-kmeans")
        self.runRecovar("analyze", args, self.analysisDir(),
                        pipelineDir=self.pipelineRun().pipelineDir())

    def createOutputStep(self):
        pipeline = self.pipelineRun()
        folder = self.analysisDir()
        ids = pipeline.idMap()
        # Per RECOVAR particle: a row of the id map, or a tilt-series particle (all its tilts).
        kmeans = rr.read_kmeans(folder, n_rows=pipeline.unitCount())
        with self.plotFolder() as plots:
            self._savePlots(plots, pipeline, kmeans, pipeline.unitCount())

        centres = None
        if self.computeCenters.get():
            centres = self.kernelVolumeSet(os.path.join(folder, rr.KMEANS_DIR), "center",
                                           "centers", "k-means centre %d")
        if centres:
            self.saveChimeraxSeries(centres, FILES.CENTRES_CXC, "RECOVAR k-means centres")
        representatives = {v.getObjId() - 1: v.getFileName() for v in centres or []}
        voxel = centres.getSamplingRate() if centres else pipeline.outputMean.getSamplingRate()
        classes = self._kmeansClasses(pipeline.outputParticles, ids,
                                      pipeline.rowValues(kmeans.labels), representatives, voxel)
        outs = {"outputClasses": classes, "outputVolumes": centres}
        for i, trajectory in enumerate(rr.analysis_trajectories(folder)):
            outs["outputTrajectory%d" % (i + 1)] = self.kernelVolumeSet(
                os.path.join(folder, "traj%03d" % i), "state", "trajectory%d" % (i + 1),
                "trajectory %d point %%d" % (i + 1))
        self.registerOutputs(outs, self.inputPipeline)

    def _kmeansClasses(self, particles, ids, labels, representatives, voxel):
        """SetOfClasses3D of the k-means labels: the classes through the Scipion API, their
        particles by SQL (:func:`fill_classes`), so no particle is built as a Python object.
        Rows RECOVAR left out (label -1) belong to no class."""
        # The images as an extended pointer (pipeline run + output name): a plain object's
        # id may not be its id in the project database (seen in scheduled workflows).
        classes = self._createSetOfClasses3D(
            Pointer(self.pipelineRun(), extended="outputParticles"))
        members = {}
        for index in sorted(set(labels.tolist()) - {-1}):
            cls = emobj.Class3D(objId=index + 1)
            cls.copyInfo(particles)
            cls.setAcquisition(particles.getAcquisition())
            cls.setObjLabel("k-means %d" % index)
            representative = emobj.Volume()
            if index in representatives:
                representative.setLocation(representatives[index])
                representative.setSamplingRate(voxel)
            cls.setRepresentative(representative)
            classes.append(cls)
            members[index + 1] = ("", ids[labels == index])
        classes.write()
        classes.close()  # Scipion's connection closed before the items are added by SQL
        fill_classes(classes.getFileName(), particles.getFileName(), members)
        return classes

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        errors = self._validateBackend() + self.validatePipeline([self.zdim.get()])
        if self.nClusters.get() < 2:
            errors.append("Ask for at least 2 k-means clusters.")
        if self.nTrajectories.get() < 0:
            errors.append("The number of trajectories cannot be negative.")
        if not errors:
            errors += self.validateMemory()
        return errors

    def _warnings(self):
        warnings = []
        if self.computeCenters.get() and not self._visibleGpus():
            warnings.append("Centre volumes on the CPU take minutes each (about 6 min per "
                            "centre at 32 px): switch 'Compute centre volumes?' off for a "
                            "quick k-means.")
        return warnings + self.memoryWarnings()

    def _summary(self):
        if not hasattr(self, "outputClasses"):
            return ["RECOVAR analyze not finished yet."]
        sizes = [c.getSize() for c in self.outputClasses]
        return ["k-means of zdim %d: %d clusters of %s particles."
                % (self.zdim.get(), len(sizes), ", ".join(map(str, sizes)))] + \
            self.provenanceSummary()

    def _methods(self):
        return ["The RECOVAR [Gilles2025recovar] latent space of dimension %d was clustered "
                "with k-means into %d clusters." % (self.zdim.get(), self.nClusters.get())]

    def _citations(self):
        return ["Gilles2025recovar"]

    # --------------------------- UTILS functions ----------------------------
    def analysisDir(self):
        return self._getExtraPath(FILES.FOLDER)

    def memoryRequest(self):
        if self.validatePipeline([self.zdim.get()]):
            return None
        kernel = bool(self.computeCenters.get() or self.nTrajectories.get() > 0)
        return self.pipelineMemoryRequest("analyze", kernelVolumes=kernel)

    def _savePlots(self, plots, pipeline, kmeans, n):
        coords = pipeline.latentCoords(self.zdim.get())
        if self.zdim.get() >= 2:
            savefig(plots, FILES.KMEANS_LATENT,
                    latent_figure(coords, kmeans.labels, kmeans.centers,
                                  title="zdim %d k-means" % self.zdim.get()))
        umap = rr.read_umap(self.analysisDir(), n_rows=n)
        if umap is not None:
            savefig(plots, FILES.UMAP, umap_figure(umap, kmeans.labels))
