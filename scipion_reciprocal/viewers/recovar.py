"""Viewers of the RECOVAR protocols: the figures they saved (PNG), logs, provenance and
ChimeraX series. File names come from ``formats.recovar_files``, as in the protocols; the
plots folder is a result folder, so an interrupted run's plots are reported, not shown."""
from ..formats import recovar_files as rf
from ..protocols import (ProtRecovarAnalyze, ProtRecovarComputeState, ProtRecovarDensity,
                         ProtRecovarExternalEmbedding, ProtRecovarJunkDetection,
                         ProtRecovarOutliers, ProtRecovarPipeline,
                         ProtRecovarPipelineWithOutliers, ProtRecovarPostprocess,
                         ProtRecovarTrajectory)
from .plot_files import PlotFilesViewer

PROVENANCE = ("Provenance (versions, seeds, memory, CPU correction)", rf.PROVENANCE)


def _plots(names):
    return tuple(rf.plot(name) for name in names)


class RecovarViewer(PlotFilesViewer):
    """What the RECOVAR viewers share: the plots folder is complete or not shown."""
    _resultFolders = (rf.PLOTS,)


class RecovarPipelineViewer(RecovarViewer):
    """Eigenvalue spectrum, FSC of the mean's half maps, latent space and contrasts."""
    _label = "recovar pipeline viewer"
    _targets = [ProtRecovarPipeline]
    _plotPatterns = _plots(rf.Pipeline.PLOTS)
    _textFiles = (("RECOVAR log", rf.run_log(rf.Pipeline.FOLDER)), PROVENANCE)


class RecovarAnalyzeViewer(RecovarViewer):
    """Latent space coloured by k-means cluster with the centres, and UMAP."""
    _label = "recovar analyze viewer"
    _targets = [ProtRecovarAnalyze]
    _plotPatterns = _plots(rf.Analyze.PLOTS)
    _textFiles = (("RECOVAR log", rf.run_log(rf.Analyze.FOLDER)), PROVENANCE)
    _chimeraxFile = ("Open the centre volumes in ChimeraX", rf.Analyze.CENTRES_CXC)


class RecovarStateViewer(RecovarViewer):
    """The computed states, as a ChimeraX volume series."""
    _label = "recovar states viewer"
    _targets = [ProtRecovarComputeState, ProtRecovarExternalEmbedding]
    _plotPatterns = _plots(rf.ExternalEmbedding.PLOTS)
    _textFiles = (PROVENANCE,)
    _chimeraxFile = ("Open the volumes in ChimeraX", rf.VOLUMES_CXC)


class RecovarTrajectoryViewer(RecovarViewer):
    """The path over the latent space, the density along it, and the volumes as a movie."""
    _label = "recovar trajectory viewer"
    _targets = [ProtRecovarTrajectory]
    _plotPatterns = _plots(rf.Trajectory.PLOTS)
    _textFiles = (("RECOVAR log", rf.run_log(rf.Trajectory.FOLDER)), PROVENANCE)
    _chimeraxFile = ("Play the trajectory in ChimeraX", rf.Trajectory.CXC)


class RecovarDensityViewer(RecovarViewer):
    """L-curve, the density for every alpha (knee framed) and the knee's density with the
    stable states."""
    _label = "recovar density viewer"
    _targets = [ProtRecovarDensity]
    _plotPatterns = _plots(rf.Density.PLOTS)
    _textFiles = (("RECOVAR log", rf.run_log(rf.Density.FOLDER)), PROVENANCE)


class RecovarOutliersViewer(RecovarViewer):
    """Latent space with the outliers marked."""
    _label = "recovar outliers viewer"
    _targets = [ProtRecovarOutliers]
    _plotPatterns = _plots(rf.Outliers.PLOTS)
    _textFiles = (("RECOVAR summary", rf.Outliers.SUMMARY), PROVENANCE)


class RecovarJunkViewer(RecovarViewer):
    """Latent space with the junk marked and each cluster's reconstruction quality (with
    RECOVAR's diagnostics, whose own 300 dpi figures stay in extra/junk/plots)."""
    _label = "recovar junk detection viewer"
    _targets = [ProtRecovarJunkDetection]
    _plotPatterns = _plots(rf.JunkDetection.PLOTS)
    _textFiles = (("RECOVAR log", rf.run_log(rf.JunkDetection.FOLDER)), PROVENANCE)


class RecovarPipelineOutliersViewer(RecovarViewer):
    """Particles removed per round, where they sat in the first round's latent space, and the
    last round's pipeline figures."""
    _label = "recovar pipeline with outliers viewer"
    _targets = [ProtRecovarPipelineWithOutliers]
    _plotPatterns = _plots(rf.PipelineWithOutliers.PLOTS)
    _textFiles = (("RECOVAR log", rf.run_log(rf.PipelineWithOutliers.FOLDER)), PROVENANCE)


class RecovarPostprocessViewer(RecovarViewer):
    """FSC of every pair of half maps (resolutions in the legend) and RECOVAR's B-factor fits."""
    _label = "recovar postprocess viewer"
    _targets = [ProtRecovarPostprocess]
    _plotPatterns = _plots(rf.Postprocess.PLOTS)
    _textFiles = (("RECOVAR log", rf.run_log(rf.Postprocess.FOLDER)), PROVENANCE)
