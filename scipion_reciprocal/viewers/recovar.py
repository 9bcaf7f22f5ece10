"""Viewers of the RECOVAR protocols: the figures they saved (PNG), logs and ChimeraX series."""
from ..protocols import (ProtRecovarAnalyze, ProtRecovarComputeState, ProtRecovarDensity,
                         ProtRecovarExternalEmbedding, ProtRecovarJunkDetection,
                         ProtRecovarOutliers, ProtRecovarPipeline,
                         ProtRecovarPipelineWithOutliers, ProtRecovarPostprocess,
                         ProtRecovarTrajectory)
from .plot_files import PlotFilesViewer


class RecovarPipelineViewer(PlotFilesViewer):
    """Eigenvalue spectrum, FSC of the mean's half maps, latent space and contrasts."""
    _label = "recovar pipeline viewer"
    _targets = [ProtRecovarPipeline]
    _plotPatterns = ("plots/eigenvalues.png", "plots/mean_fsc.png", "plots/latent_zdim*.png",
                     "plots/contrast_histogram.png")
    _textFiles = (("RECOVAR log", "pipeline/run.log"),)


class RecovarAnalyzeViewer(PlotFilesViewer):
    """Latent space coloured by k-means cluster with the centres, and UMAP."""
    _label = "recovar analyze viewer"
    _targets = [ProtRecovarAnalyze]
    _plotPatterns = ("plots/kmeans_latent.png", "plots/umap.png")
    _textFiles = (("RECOVAR log", "analysis/run.log"),)
    _chimeraxFile = ("Open the centre volumes in ChimeraX", "centres.cxc")


class RecovarStateViewer(PlotFilesViewer):
    """The computed states, as a ChimeraX volume series."""
    _label = "recovar states viewer"
    _targets = [ProtRecovarComputeState, ProtRecovarExternalEmbedding]
    _plotPatterns = ("plots/*.png",)
    _chimeraxFile = ("Open the volumes in ChimeraX", "volumes.cxc")


class RecovarTrajectoryViewer(PlotFilesViewer):
    """The path over the latent space, the density along it, and the volumes as a movie."""
    _label = "recovar trajectory viewer"
    _targets = [ProtRecovarTrajectory]
    _plotPatterns = ("plots/path_latent.png", "plots/density_along_path.png")
    _textFiles = (("RECOVAR log", "trajectory/run.log"),)
    _chimeraxFile = ("Play the trajectory in ChimeraX", "trajectory.cxc")


class RecovarDensityViewer(PlotFilesViewer):
    """L-curve, the density for every alpha (knee framed) and the knee's density with the
    stable states."""
    _label = "recovar density viewer"
    _targets = [ProtRecovarDensity]
    _plotPatterns = ("plots/lcurve.png", "plots/densities_by_alpha.png",
                     "plots/density_knee.png")
    _textFiles = (("RECOVAR log", "density/run.log"),)


class RecovarOutliersViewer(PlotFilesViewer):
    """Latent space with the outliers marked."""
    _label = "recovar outliers viewer"
    _targets = [ProtRecovarOutliers]
    _plotPatterns = ("plots/outliers_latent.png",)
    _textFiles = (("RECOVAR summary", "outliers/data/summary.txt"),)


class RecovarJunkViewer(PlotFilesViewer):
    """Latent space with the junk marked and each cluster's reconstruction quality (with
    RECOVAR's diagnostics, whose own 300 dpi figures stay in extra/junk/plots)."""
    _label = "recovar junk detection viewer"
    _targets = [ProtRecovarJunkDetection]
    _plotPatterns = ("plots/junk_latent.png", "plots/junk_clusters.png")
    _textFiles = (("RECOVAR log", "junk/run.log"),)


class RecovarPipelineOutliersViewer(PlotFilesViewer):
    """Particles removed per round, where they sat in the first round's latent space, and the
    last round's pipeline figures."""
    _label = "recovar pipeline with outliers viewer"
    _targets = [ProtRecovarPipelineWithOutliers]
    _plotPatterns = ("plots/outlier_rounds.png", "plots/outliers_latent.png",
                     "plots/eigenvalues.png", "plots/mean_fsc.png", "plots/latent_zdim*.png",
                     "plots/contrast_histogram.png")
    _textFiles = (("RECOVAR log", "pipeline_with_outliers/run.log"),)


class RecovarPostprocessViewer(PlotFilesViewer):
    """FSC of every pair of half maps (resolutions in the legend) and RECOVAR's B-factor fits."""
    _label = "recovar postprocess viewer"
    _targets = [ProtRecovarPostprocess]
    _plotPatterns = ("plots/fsc.png", "plots/bfactor_*.png")
    _textFiles = (("RECOVAR log", "postprocess/run.log"),)
