"""RECOVAR compute_trajectory: a path between two latent points and the volumes along it."""
import numpy as np
import pwem.objects as emobj
from pyworkflow.protocol import params

from ..formats import recovar_files as rf
from ..formats import recovar_results as rr
from ..formats._atomic import atomic_path
from ..plotting.recovar import latent_figure, trajectory_density_figure
from .recovar_base import ProtRecovarBase, savefig

FILES = rf.Trajectory
ENDS_FROM_KMEANS, ENDS_FROM_COORDINATES = range(2)


def parsePoint(text):
    """``"1.5, -2"`` -> ``array([1.5, -2.])``; ValueError for anything else."""
    values = [float(v) for v in text.replace(",", " ").split()]
    if not values:
        raise ValueError("empty point")
    return np.array(values)


class ProtRecovarTrajectory(ProtRecovarBase):
    """Follows a path through a RECOVAR latent space between two points (k-means centres of
    an analyze run, or typed coordinates) and computes kernel-regression volumes along it,
    returned in path order. Given a conformational density ('recovar conformational
    density'), the path follows high density and the density along it is plotted; without
    one the path is straight. A ChimeraX command file plays the volumes as a movie."""
    _label = "recovar compute trajectory"
    _possibleOutputs = {"outputVolumes": emobj.SetOfVolumes}

    # --------------------------- DEFINE param functions ---------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        self._definePipelineParam(form)
        form.addParam("zdim", params.IntParam, default=4, label="Latent dimension",
                      help="Latent space of the path (one of the pipeline's dimensions).")
        form.addParam("endpointsSource", params.EnumParam,
                      choices=["k-means centres", "coordinates"], default=ENDS_FROM_KMEANS,
                      label="End points from", help="Two k-means centres, or typed points.")
        form.addParam("inputAnalysis", params.PointerParam, pointerClass="ProtRecovarAnalyze",
                      allowsNull=True, condition="endpointsSource == %d" % ENDS_FROM_KMEANS,
                      label="RECOVAR analyze",
                      help="An analyze run of the same latent dimension.")
        form.addParam("startCentre", params.IntParam, default=0,
                      condition="endpointsSource == %d" % ENDS_FROM_KMEANS,
                      label="Start centre", help="k-means index (from 0) of the first end.")
        form.addParam("endCentre", params.IntParam, default=1,
                      condition="endpointsSource == %d" % ENDS_FROM_KMEANS,
                      label="End centre", help="k-means index (from 0) of the last end.")
        form.addParam("startPoint", params.StringParam, default="",
                      condition="endpointsSource == %d" % ENDS_FROM_COORDINATES,
                      label="Start point", help="zdim numbers separated by commas or spaces.")
        form.addParam("endPoint", params.StringParam, default="",
                      condition="endpointsSource == %d" % ENDS_FROM_COORDINATES,
                      label="End point", help="zdim numbers separated by commas or spaces.")
        form.addParam("nVolumes", params.IntParam, default=6, label="Volumes along the path",
                      help="Kernel-regression volumes computed at evenly spaced points.")
        form.addParam("inputDensity", params.PointerParam, pointerClass="ProtRecovarDensity",
                      allowsNull=True, label="Conformational density (optional)",
                      help="A 'recovar conformational density' run: the path then follows "
                           "the density, and the density along it is recorded.")
        form.addParam("densityAlpha", params.IntParam, default=-1,
                      label="Density alpha index",
                      help="Which of the density run's alphas to use (its index, see its "
                           "L-curve); -1 takes the knee RECOVAR chose.")
        form.addParam("regularized", params.BooleanParam, default=False,
                      label="Use regularised coordinates?",
                      help="RECOVAR's trajectories use the unregularised coordinates by default;"
                           " k-means centres are regularised ones (--override_z_regularization"
                           " switches the path to them).")
        self._defineVolumeParams(form)
        self._defineMemoryParams(form)
        self._defineExtraParams(form)
        self._defineGpuParams(form)

    # --------------------------- INSERT steps functions ---------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.writeEndpointsStep, needsGPU=False)
        self._insertFunctionStep(self.trajectoryStep)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    # --------------------------- STEPS functions ----------------------------
    def writeEndpointsStep(self):
        start, end = self.endpoints()
        for name, point in ((FILES.START, start), (FILES.END, end)):
            with atomic_path(self._getExtraPath(name)) as tmp:
                np.savetxt(tmp, point[None])
        self.info("Path from %s to %s" % (np.round(start, 4), np.round(end, 4)))

    def trajectoryStep(self):
        pipelineDir = self.pipelineRun().pipelineDir()
        args = [pipelineDir, "--zdim", self.zdim.get(),
                "--z_st", self._getExtraPath(FILES.START), "--z_end", self._getExtraPath(FILES.END),
                "--n-vols-along-path", self.nVolumes.get()]
        args += self.volumeArguments(self.pipelineHalfSizes())
        density = self.densityFile()
        if density:
            args += ["--density", density]
        if self.regularized.get():
            args.append("--override_z_regularization")
        self.runRecovar("compute_trajectory", args, self._getExtraPath(FILES.FOLDER),
                        pipelineDir=pipelineDir)

    def createOutputStep(self):
        trajectory = rr.read_trajectory(self._getExtraPath(FILES.FOLDER))
        if not trajectory.volumes.volumes:
            raise rr.RecovarResultError(self._getExtraPath(FILES.FOLDER),
                                        "no volumes along the path")
        volumes = self.kernelVolumeSet(trajectory.volumes.volumes[0].parent, "state",
                                       "trajectory", "trajectory point %d")
        with self.plotFolder() as plots:
            self._savePlots(plots, trajectory)
        self.saveChimeraxSeries(volumes, FILES.CXC, "RECOVAR trajectory")
        self.registerOutputs({"outputVolumes": volumes}, self.inputPipeline)

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        errors = self._validateBackend() + self.validatePipeline([self.zdim.get()])
        if errors:
            return errors
        try:
            self.endpoints()
        except (ValueError, rr.RecovarResultError) as exc:
            errors.append(str(exc))
        if self.nVolumes.get() < 2:
            errors.append("Ask for at least 2 volumes along the path.")
        try:
            self.densityFile()
        except (ValueError, rr.RecovarResultError) as exc:
            errors.append(str(exc))
        return errors + (self.validateMemory() if not errors else [])

    def _warnings(self):
        return self.memoryWarnings()

    def _summary(self):
        if not hasattr(self, "outputVolumes"):
            return ["Trajectory not computed yet."]
        return ["%d volumes along a path in zdim %d%s; ChimeraX: %s"
                % (self.outputVolumes.getSize(), self.zdim.get(),
                   " following the density" if self.inputDensity.get() else "",
                   self._getExtraPath(FILES.CXC))] + self.provenanceSummary()

    def _methods(self):
        return ["Volumes along a latent-space trajectory were computed with RECOVAR "
                "[Gilles2025recovar]."]

    def _citations(self):
        return ["Gilles2025recovar"]

    # --------------------------- UTILS functions ----------------------------
    def memoryRequest(self):
        if self.validatePipeline([self.zdim.get()]):
            return None
        return self.pipelineMemoryRequest("compute_trajectory")

    def endpoints(self):
        """``(start, end)`` latent points; ValueError naming the parameter when they are bad."""
        zdim = self.zdim.get()
        if self.endpointsSource.get() == ENDS_FROM_COORDINATES:
            points = []
            for name in ("startPoint", "endPoint"):
                text = self.getAttributeValue(name, "")
                try:
                    points.append(parsePoint(text))
                except ValueError:
                    raise ValueError("%s %r is not a list of numbers." % (name, text)) from None
        else:
            analysis = self.inputAnalysis.get()
            if analysis is None:
                raise ValueError("Choose the 'recovar analyze' run whose centres are the ends.")
            if analysis.zdim.get() != zdim:
                raise ValueError("The analyze run '%s' clustered zdim %d, not %d."
                                 % (analysis.getObjLabel(), analysis.zdim.get(), zdim))
            centers = rr.read_kmeans(analysis.analysisDir()).centers
            indices = (self.startCentre.get(), self.endCentre.get())
            if any(not 0 <= i < len(centers) for i in indices) or indices[0] == indices[1]:
                raise ValueError("Start and end centres must differ and lie in 0..%d (got %d, %d)."
                                 % (len(centers) - 1, indices[0], indices[1]))
            points = [centers[i] for i in indices]
        for point in points:
            if len(point) != zdim:
                raise ValueError("End point %s has %d values; the latent dimension is %d."
                                 % (list(point), len(point), zdim))
        return points[0], points[1]

    def densityFile(self):
        """Path of the chosen density pickle, or None without a density run."""
        run = self.inputDensity.get()
        if run is None:
            return None
        density = rr.read_density(run.densityDir())
        index = self.densityAlpha.get()
        if index < 0:
            index = density.knee_index
        if index >= len(density.alphas):
            raise ValueError("Density alpha index %d does not exist: '%s' has alphas 0..%d."
                             % (index, run.getObjLabel(), len(density.alphas) - 1))
        return str(density.density_files[index])

    def _savePlots(self, plots, trajectory):
        savefig(plots, FILES.DENSITY_ALONG_PATH,
                trajectory_density_figure(trajectory.density, trajectory.point_density))
        pipeline = self.pipelineRun()
        coords = rr.read_embedding(pipeline.pipelineDir(), self.zdim.get(),
                                   regularized=self.regularized.get()).coords
        if coords.shape[1] >= 2:
            savefig(plots, FILES.PATH_LATENT,
                    latent_figure(coords, title="path in zdim %d" % self.zdim.get(),
                                  path=trajectory.path, path_points=trajectory.points))
