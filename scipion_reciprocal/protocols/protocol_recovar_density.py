"""RECOVAR estimate_conformational_density (+ estimate_stable_states): the latent density."""
import os

import numpy as np
import pwem.objects as emobj
from pyworkflow.protocol import params

from ..formats import recovar_files as rf
from ..formats import recovar_results as rr
from ..plotting.recovar import density_alphas_figure, density_figure
from .recovar_base import ProtRecovarBase, savefig

FILES = rf.Density
#: RECOVAR's knee search (kneed) finds no knee on 3 alphas and crashes; 6 worked here.
MIN_ALPHAS = 6


class ProtRecovarDensity(ProtRecovarBase):
    """Estimates the conformational density of a RECOVAR latent space by deconvolving the
    particles' embedding uncertainty, for several regularisation strengths (alphas), and picks
    the knee of the L-curve. The densities of every alpha are plotted side by side so another
    can be chosen downstream (trajectories take an alpha index). Optionally finds the stable
    states (local maxima of the knee's density)."""
    _label = "recovar conformational density"
    _possibleOutputs = {"outputDensity": emobj.EMFile, "outputStableStates": emobj.EMFile}

    # --------------------------- DEFINE param functions ---------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        self._definePipelineParam(form)
        form.addParam("pcaDim", params.IntParam, default=2, label="Density dimensions",
                      help="Principal components the density is estimated on (RECOVAR "
                           "--pca_dim). The grid has points^dims cells: 1-3 are cheap, 4 is "
                           "RECOVAR's default and much heavier.")
        form.addParam("zdimUsed", params.IntParam, default=0, label="Embedding used",
                      help="Latent dimension whose (unregularised) coordinates are used; 0 takes "
                           "the smallest computed one >= the density dimensions.")
        form.addParam("gridPoints", params.IntParam, default=0, label="Grid points per axis",
                      help="0: RECOVAR's default (1000, 200, 100, 50 for 1, 2, 3, more "
                           "dimensions). Fewer points are faster and coarser.")
        form.addParam("alphas", params.StringParam, default="",
                      label="Regularisation alphas",
                      help="Space- or comma-separated alphas to try (at least %d); empty: "
                           "RECOVAR's 1e1 ... 1e-9. The knee of the L-curve is chosen "
                           "automatically." % MIN_ALPHAS)
        group = form.addGroup("Bounds", expertLevel=params.LEVEL_ADVANCED)
        group.addParam("percentileReject", params.IntParam, default=10,
                       label="Reject percentile",
                       help="Particles with the largest embedding uncertainty (this percentile)"
                            " are left out (RECOVAR --percentile_reject).")
        group.addParam("percentileBound", params.IntParam, default=1,
                       label="Bound percentile",
                       help="The grid spans the latent coordinates between this percentile and "
                            "its complement (RECOVAR --percentile_bound).")
        form.addSection(label="Stable states")
        form.addParam("stableStates", params.BooleanParam, default=True,
                      label="Find stable states?",
                      help="Local maxima of the knee's density (RECOVAR estimate_stable_states);"
                           " their coordinates can be given to 'recovar compute state'.")
        form.addParam("nLocalMaxima", params.IntParam, default=3, condition="stableStates",
                      label="Number of states",
                      help="Local maxima kept; 0 lets HDBSCAN decide.")
        form.addParam("percentTop", params.FloatParam, default=1, condition="stableStates",
                      label="Top percent", help="Percent of the highest-density cells searched "
                                                "for maxima (RECOVAR --percent_top).")
        self._defineExtraParams(form)
        self._defineGpuParams(form)

    # --------------------------- INSERT steps functions ---------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.densityStep)
        if self.stableStates.get():
            self._insertFunctionStep(self.stableStatesStep)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    # --------------------------- STEPS functions ----------------------------
    def densityStep(self):
        args = [self.pipelineRun().pipelineDir(), "--pca_dim", self.pcaDim.get(),
                "--percentile_reject", self.percentileReject.get(),
                "--percentile_bound", self.percentileBound.get()]
        if self.zdimUsed.get() > 0:
            args += ["--z_dim_used", self.zdimUsed.get()]
        if self.gridPoints.get() > 0:
            args += ["--num_disc_points", self.gridPoints.get()]
        if self.alphaList():
            args += ["--alphas"] + ["%g" % a for a in self.alphaList()]
        self.runRecovar("estimate_conformational_density", args, self.densityDir(),
                        outputFlag="--output_dir", pipelineDir=self.pipelineRun().pipelineDir())

    def stableStatesStep(self):
        density = rr.read_density(self.densityDir())
        knee = density.density_files[density.knee_index]
        self.runRecovar("estimate_stable_states",
                        [str(knee), "--n_local_maxs", self.nLocalMaxima.get(),
                         "--percent_top", self.percentTop.get()], self.stableDir())

    def createOutputStep(self):
        density = rr.read_density(self.densityDir())
        states = rr.read_stable_states(self.stableDir()) if self.stableStates.get() else None
        with self.plotFolder() as plots:
            self._savePlots(plots, density, states)
        self.info("L-curve knee: alpha %.2g (index %d of %d)"
                  % (density.knee_alpha, density.knee_index, len(density.alphas)))
        outputs = {"outputDensity": emobj.EMFile(
            filename=str(density.density_files[density.knee_index]))}
        if states is not None:
            outputs["outputStableStates"] = emobj.EMFile(
                filename=os.path.join(self.stableDir(), rr.STABLE_STATES_TXT))
        self.registerOutputs(outputs, self.inputPipeline)

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        errors = self._validateBackend()
        try:
            alphas = self.alphaList()
            if any(a <= 0 for a in alphas) or 0 < len(alphas) < MIN_ALPHAS:
                raise ValueError
        except ValueError:
            errors.append("Alphas must be at least %d positive numbers, or empty for RECOVAR's "
                          "defaults (got %r)." % (MIN_ALPHAS, self.alphas.get()))
        zdims = [self.zdimUsed.get()] if self.zdimUsed.get() > 0 else []
        pipelineErrors = self.validatePipeline(zdims)
        if pipelineErrors:
            return errors + pipelineErrors
        pipeline = self.pipelineRun()
        if self.pcaDim.get() < 1:
            errors.append("Density dimensions must be at least 1.")
        elif not [z for z in (zdims or pipeline.zdimList()) if z >= self.pcaDim.get()]:
            errors.append("The density has %d dimensions but the pipeline '%s' computed zdim %s "
                          "only: choose fewer dimensions." % (self.pcaDim.get(),
                                                              pipeline.getObjLabel(),
                                                              pipeline.zdims.get()))
        return errors

    def _summary(self):
        if not hasattr(self, "outputDensity"):
            return ["Density not estimated yet."]
        try:
            density = rr.read_density(self.densityDir())
        except rr.RecovarResultError as exc:
            return [str(exc)]
        lines = ["%d-D density; L-curve knee at alpha %.2g (index %d)."
                 % (self.pcaDim.get(), density.knee_alpha, density.knee_index)]
        if hasattr(self, "outputStableStates"):
            states = rr.read_stable_states(self.stableDir())
            lines.append("%d stable states: %s" % (len(states), np.round(states, 3).tolist()))
        return lines + self.provenanceSummary()

    def _methods(self):
        return ["The conformational density of the RECOVAR [Gilles2025recovar] latent space was "
                "estimated in %d dimensions." % self.pcaDim.get()]

    def _citations(self):
        return ["Gilles2025recovar"]

    # --------------------------- UTILS functions ----------------------------
    def alphaList(self):
        return [float(a) for a in (self.alphas.get() or "").replace(",", " ").split()]

    def densityDir(self):
        return self._getExtraPath(FILES.FOLDER)

    def stableDir(self):
        return self._getExtraPath(FILES.STABLE_FOLDER)

    def _savePlots(self, plots, density, states):
        if density.lcurve_plot is not None:  # RECOVAR writes the L-curve costs nowhere else
            with plots.writing(FILES.LCURVE) as tmp:
                tmp.write_bytes(density.lcurve_plot.read_bytes())
        densities = [density.density(i)[0] for i in range(len(density.alphas))]
        savefig(plots, FILES.BY_ALPHA, density_alphas_figure(densities, density.bounds,
                                                             density.alphas, density.knee_index))
        savefig(plots, FILES.KNEE,
                density_figure(density.knee_density, density.bounds, points=states,
                               title="density at the knee (alpha %.1g)%s"
                                     % (density.knee_alpha, "; stable states"
                                        if states is not None else "")))
