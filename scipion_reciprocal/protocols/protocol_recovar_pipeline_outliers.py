"""RECOVAR pipeline_with_outliers: the pipeline run again and again without its outliers."""
import pwem.objects as emobj
from pyworkflow.protocol import params

from ..formats import recovar_cleaning as rc
from ..formats import recovar_files as rf
from ..formats import recovar_results as rr
from ..plotting.recovar_cleaning import flagged_latent_figure, outlier_rounds_figure
from .protocol_recovar_pipeline import OUTPUTS, ProtRecovarPipeline
from .recovar_base import savefig

FILES = rf.PipelineWithOutliers
#: Attribute of the removed particles: the round that removed them (1, 2, ...).
ROUND_ATTR = "_recovar_outlier_round"


class ProtRecovarPipelineWithOutliers(ProtRecovarPipeline):
    """Runs RECOVAR's pipeline, detects outliers in its latent space (and optionally by
    contrast and junk detection), and runs the pipeline again on the inliers, for a number of
    rounds (RECOVAR pipeline_with_outliers). The last round's results are the outputs, as a
    'recovar pipeline' gives them (mean, variances, eigenvolumes, the clean particles with
    their latent coordinates), so every RECOVAR protocol can follow; the particles removed
    are a second set, each with the round that removed it."""
    _label = "recovar pipeline with outliers"
    _possibleOutputs = dict(OUTPUTS, outputOutliers=emobj.SetOfParticles)
    _recovarCommand = "pipeline_with_outliers"

    # --------------------------- DEFINE param functions ---------------------
    def _defineParams(self, form):
        ProtRecovarPipeline._defineParams(self, form)
        form.addSection(label="Outlier removal")
        form.addParam("kRounds", params.IntParam, default=2, label="Rounds",
                      help="Pipeline + outlier detection rounds (--k-rounds); each round runs "
                           "the whole pipeline on the previous round's inliers. Outliers are "
                           "searched in the last latent dimension listed.")
        form.addParam("outlierRegularized", params.BooleanParam, default=True,
                      label="Use regularised coordinates?",
                      help="No: outliers are searched in the unregularised coordinates "
                           "(--no-z-regularization).")
        form.addParam("contrastDetection", params.BooleanParam, default=False,
                      label="Contrast outliers?",
                      help="Also remove particles of implausible contrast, and micrographs "
                           "where most are (--use-contrast-detection); needs 'Correct "
                           "contrast?' (otherwise every contrast is 1).")
        group = form.addGroup("Contrast", condition="contrastDetection",
                              expertLevel=params.LEVEL_ADVANCED)
        group.addParam("lowContrast", params.FloatParam, default=0.1, label="Low contrast",
                       help="Contrasts below this are outliers (--low-contrast-threshold).")
        group.addParam("highContrast", params.FloatParam, default=3.5, label="High contrast",
                       help="Contrasts above this are outliers (--high-contrast-threshold).")
        group.addParam("maxContrast", params.FloatParam, default=4.0, label="Maximum contrast",
                       help="Largest contrast considered (--max-contrast).")
        group.addParam("particleBadFraction", params.FloatParam, default=0.7,
                       label="Bad fraction per particle",
                       help="Tilt series: a particle is removed when this fraction of its "
                            "tilt images are bad (--particle-bad-fraction-threshold).")
        group.addParam("micrographBadFraction", params.FloatParam, default=0.7,
                       label="Bad fraction per micrograph",
                       help="A whole micrograph is removed when this fraction of its images "
                            "are bad (--micrograph-bad-fraction-threshold).")
        form.addParam("junkDetection", params.BooleanParam, default=False,
                      label="Junk detection?",
                      help="Also remove clusters whose reconstructions are poor, as 'recovar "
                           "junk detection' does (--use-junk-detection); costs two small "
                           "reconstructions per cluster in every round.")
        form.addParam("junkThreshold", params.FloatParam, default=0.5, condition="junkDetection",
                      label="Junk threshold", help="RECOVAR --junk-threshold.")

    # --------------------------- STEPS functions ----------------------------
    def pipelineStep(self):
        args = self.pipelineArguments() + ["--k-rounds", self.kRounds.get()]
        if not self.outlierRegularized.get():
            args.append("--no-z-regularization")
        if self.contrastDetection.get():
            args += ["--use-contrast-detection",
                     "--low-contrast-threshold", self.lowContrast.get(),
                     "--high-contrast-threshold", self.highContrast.get(),
                     "--max-contrast", self.maxContrast.get(),
                     "--particle-bad-fraction-threshold", self.particleBadFraction.get(),
                     "--micrograph-bad-fraction-threshold", self.micrographBadFraction.get()]
        if self.junkDetection.get():
            args += ["--use-junk-detection", "--junk-threshold", self.junkThreshold.get()]
        # Memory options (--downsample included) come from memoryArguments.
        self.runRecovar(self._recovarCommand, args, self.outliersDir())

    def createOutputStep(self):
        ids = self.idMap()
        rounds = rc.read_outlier_rounds(self.outliersDir(), len(ids))
        self.info("Rounds %s removed %s particles; %d kept of %d"
                  % (rounds.rounds, rounds.removed_per_round(), len(rounds.kept), len(ids)))
        with self.plotFolder() as plots:
            outputs = self.pipelineOutputs(str(rounds.last_pipeline), plots, rounds.kept)
            self._saveRoundPlots(plots, rounds, len(ids))
        removed = rounds.removed
        outputs["outputOutliers"] = self.particleSubset(
            self.sourceParticles(), ids[removed], "_outliers",
            {ROUND_ATTR: ("Integer", rounds.removed_in[removed].tolist())})
        self.registerPipelineOutputs(outputs)

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        errors = ProtRecovarPipeline._validate(self)
        if self.kRounds.get() < 1:
            errors.append("Ask for at least one round.")
        return errors

    def _summary(self):
        if not hasattr(self, "outputOutliers"):
            return ["RECOVAR pipeline with outliers not finished yet."]
        rounds = rc.read_outlier_rounds(self.outliersDir(), len(self.idMap()))
        return (["%d rounds removed %s particles: %d kept, %d removed."
                 % (len(rounds.rounds), "+".join(map(str, rounds.removed_per_round())),
                    self.outputParticles.getSize(), self.outputOutliers.getSize())]
                + ProtRecovarPipeline._summary(self))

    def _methods(self):
        return ProtRecovarPipeline._methods(self) + [
            "Outliers in its latent space of dimension %d were removed over %d rounds of the "
            "pipeline." % (self.zdimList()[-1], self.kRounds.get())]

    # --------------------------- UTILS functions ----------------------------
    def outliersDir(self):
        """The folder of RECOVAR's pipeline_with_outliers (its rounds inside)."""
        return self._getExtraPath(FILES.FOLDER)

    def pipelineDir(self):
        """The last finished round's pipeline folder: what the following protocols use."""
        return str(rc.last_round_dir(self.outliersDir()))

    def _writeProvenance(self, command, outputDir, record, pipelineDir, memoryPlan):
        """The principal components recorded are those of the last finished round."""
        try:
            pipelineDir = self.pipelineDir()
        except rr.RecovarResultError:
            pass  # no round finished: the record says what failed
        super()._writeProvenance(command, outputDir, record, pipelineDir, memoryPlan)

    def _saveRoundPlots(self, plots, rounds, n):
        savefig(plots, FILES.ROUNDS, outlier_rounds_figure(n, rounds.removed_per_round()))
        first = rc.round_dir(self.outliersDir(), rounds.rounds[0])
        zdim = self.zdimList()[-1]
        coords = self.rowValues(self.latentCoords(zdim, self.outlierRegularized.get(), first))
        names = ["kept"] + ["removed in round %d" % k for k in rounds.rounds]
        savefig(plots, FILES.REMOVED_LATENT,
                flagged_latent_figure(coords, rounds.removed_in, names,
                                      "zdim %d of round 1: particles removed" % zdim))
