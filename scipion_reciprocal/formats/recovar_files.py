"""Names of the files the RECOVAR protocols write, each named once.

Paths are relative to a protocol's ``extra`` folder. The protocols write them and the viewers
(``viewers/recovar.py``) read them by these names; RECOVAR's own output layout inside each
command folder is read by :mod:`.recovar_results`.

Every RECOVAR protocol has
    ``inputs/``           the converted particles (RECOVAR's STAR, poses, CTF, id map), masks
    ``plots/``            the figures, a result folder with a manifest (``ResultFolder``)
    ``provenance.json``   per RECOVAR command: versions, seeds, principal components, memory
                          budget and plan, the CPU correction (``recovar_provenance``)
    ``runs/``             the launcher's record of each command (``<command>.json``)
and one folder per RECOVAR command it runs (below).
"""

from .recovar_results import RUN_LOG

INPUTS = "inputs"
PLOTS = "plots"
PROVENANCE = "provenance.json"
RUNS = "runs"
#: ChimeraX series of kernel-regression volumes (compute state, external embedding).
VOLUMES_CXC = "volumes.cxc"


def plot(name):
    """Path of a figure in the plots folder."""
    return "%s/%s" % (PLOTS, name)


def run_log(folder):
    """RECOVAR's log of the command run in ``folder``."""
    return "%s/%s" % (folder, RUN_LOG)


def run_record(command):
    """The launcher's record of ``command`` (``runs/<command>.json``)."""
    return "%s/%s.json" % (RUNS, command)


class Pipeline:
    FOLDER = "pipeline"
    MASK = "%s/mask.mrc" % INPUTS
    FOCUS_MASK = "%s/focus_mask.mrc" % INPUTS
    EIGENVALUES = "eigenvalues.png"
    MEAN_FSC = "mean_fsc.png"
    LATENT = "latent_zdim%d.png"          # % zdim
    CONTRASTS = "contrast_histogram.png"
    PLOTS = (EIGENVALUES, MEAN_FSC, "latent_zdim*.png", CONTRASTS)


class TiltSeries:
    """Cryo-ET input of the pipeline given as files (tilt-series STAR, RELION 5 project)."""
    RELION5_STAR = "relion5/particles_2d.star"   # RECOVAR's parse_relion5_tomo writes it
    PARTICLES_SQLITE = "tilt_particles.sqlite"   # the STAR's rows as a Scipion set


class PipelineWithOutliers:
    FOLDER = "pipeline_with_outliers"
    ROUNDS = "outlier_rounds.png"
    REMOVED_LATENT = "outliers_latent.png"
    PLOTS = (ROUNDS, REMOVED_LATENT) + Pipeline.PLOTS


class Analyze:
    FOLDER = "analysis"
    KMEANS_LATENT = "kmeans_latent.png"
    UMAP = "umap.png"
    CENTRES_CXC = "centres.cxc"
    PLOTS = (KMEANS_LATENT, UMAP)


class ComputeState:
    FOLDER = "states"
    POINTS = "latent_points.txt"
    VOLUMES_CXC = VOLUMES_CXC


class Trajectory:
    FOLDER = "trajectory"
    START, END = "z_start.txt", "z_end.txt"
    PATH_LATENT = "path_latent.png"
    DENSITY_ALONG_PATH = "density_along_path.png"
    CXC = "trajectory.cxc"
    PLOTS = (PATH_LATENT, DENSITY_ALONG_PATH)


class Density:
    FOLDER = "density"
    STABLE_FOLDER = "stable_states"
    LCURVE = "lcurve.png"
    BY_ALPHA = "densities_by_alpha.png"
    KNEE = "density_knee.png"
    PLOTS = (LCURVE, BY_ALPHA, KNEE)


class Outliers:
    FOLDER = "outliers"
    LATENT = "outliers_latent.png"
    SUMMARY = "%s/data/summary.txt" % FOLDER
    PLOTS = (LATENT,)


class ExternalEmbedding:
    FOLDER = "volumes"
    EMBEDDING = "%s/embedding.pkl" % INPUTS
    TARGETS = "%s/targets.txt" % INPUTS
    EMBEDDING_PLOT = "embedding.png"
    VOLUMES_CXC = VOLUMES_CXC
    PLOTS = (EMBEDDING_PLOT,)


class Subsets:
    FOLDER = "subset"
    STAR_FOLDER = "star"
    STAR = "%s/particles.star" % STAR_FOLDER
    STACKS = "%s/Stacks" % STAR_FOLDER
    FEATURE_MASK = "feature_mask.mrc"


class JunkDetection:
    FOLDER = "junk"
    LATENT = "junk_latent.png"
    CLUSTERS = "junk_clusters.png"
    PLOTS = (LATENT, CLUSTERS)


class Postprocess:
    FOLDER = "postprocess"
    #: The half maps linked where RECOVAR's batch mode finds them, and the FSC mask.
    BATCH = "%s/halfmaps" % INPUTS
    FSC_MASK = "%s/fsc_mask.mrc" % INPUTS
    #: With an estimated B-factor: one run per volume, sharpened by its own estimate.
    SINGLE_BATCH = "sharpen_inputs/%s"       # % volume name
    SINGLE_FOLDER = "postprocess_sharpened/%s"
    BFACTORS = "bfactors.json"
    FSC = "fsc.png"
    BFACTOR_FIT = "bfactor_%s.png"           # % volume name (RECOVAR's own figure)
    PLOTS = (FSC, "bfactor_*.png")
