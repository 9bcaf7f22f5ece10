"""Viewers of the reciprocal analysis and of imported RELION classifications."""
from ..core.reciprocal_io import SUMMARY_TXT
from ..plotting.reciprocal import PLOTS_DIR, SANKEY_HTML
from ..protocols import ProtImportRelionClassifications, ProtReciprocalAnalysis
from ..protocols.protocol_import_relion_classes import PLOTS_DIR as IMPORT_PLOTS_DIR
from ..protocols.protocol_reciprocal import RESULTS_DIR
from .plot_files import PlotFilesViewer


class ReciprocalAnalysisViewer(PlotFilesViewer):
    """Heatmaps (counts, fractions, Jaccard), Sankey diagrams, agreement table, convergence
    plots and class-map slices of a reciprocal analysis."""
    _label = "reciprocal analysis viewer"
    _targets = [ProtReciprocalAnalysis]
    _plotPatterns = ("%s/%s/sankey_*.png" % (RESULTS_DIR, PLOTS_DIR),
                     "%s/%s/agreement.png" % (RESULTS_DIR, PLOTS_DIR),
                     "%s/%s/heatmap_*.png" % (RESULTS_DIR, PLOTS_DIR),
                     "%s/%s/convergence_*.png" % (RESULTS_DIR, PLOTS_DIR),
                     "%s/%s/class_slices_*.png" % (RESULTS_DIR, PLOTS_DIR))
    _textFiles = (("Summary (text)", "%s/%s" % (RESULTS_DIR, SUMMARY_TXT)),)
    _resultFolders = (RESULTS_DIR,)
    _htmlFiles = (("Interactive Sankey diagram (browser)",
                   "%s/%s/%s" % (RESULTS_DIR, PLOTS_DIR, SANKEY_HTML)),)


class RelionClassificationsViewer(PlotFilesViewer):
    """Convergence (class changes, class distribution, resolution per iteration) and
    central slices of the class maps of imported RELION classifications."""
    _label = "RELION classifications viewer"
    _targets = [ProtImportRelionClassifications]
    _plotPatterns = ("%s/convergence_*.png" % IMPORT_PLOTS_DIR,
                     "%s/class_slices_*.png" % IMPORT_PLOTS_DIR)
    _resultFolders = ("",)
