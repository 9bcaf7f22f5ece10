"""Viewer of map similarity clustering."""
import shutil

from pyworkflow.protocol import params
from pyworkflow.viewer import CommandView

from ..core.mapsim.results import CHIMERAX_CXC, SUMMARY_TXT
from ..protocols import ProtMapClustering
from ..protocols.protocol_map_clustering import RESULTS_DIR
from .plot_files import PlotFilesViewer

CHIMERAX_PROGRAMS = ("chimerax", "ChimeraX")


class MapClusteringViewer(PlotFilesViewer):
    """Similarity heatmap ordered by the dendrogram, dendrogram with the cut, MDS scatter
    coloured by cluster, per-cluster slice montages, and the clusters' aligned members in
    ChimeraX."""
    _label = "map clustering viewer"
    _targets = [ProtMapClustering]
    _plotPatterns = ("%s/similarity_matrix_heatmap.png" % RESULTS_DIR,
                     "%s/dendrogram.png" % RESULTS_DIR, "%s/mds.png" % RESULTS_DIR,
                     "%s/cluster_*_montage.png" % RESULTS_DIR)
    _textFiles = (("Summary (text)", "%s/%s" % (RESULTS_DIR, SUMMARY_TXT)),)

    def _defineParams(self, form):
        PlotFilesViewer._defineParams(self, form)
        form.addParam("chimerax", params.LabelParam, label="Open the clusters in ChimeraX",
                      help="Runs the ChimeraX command file written by the protocol (one model "
                           "group and colour per cluster) when ChimeraX is on the PATH; "
                           "otherwise shows the file.")

    def _getVisualizeDict(self):
        visualize = PlotFilesViewer._getVisualizeDict(self)
        visualize["chimerax"] = self._openChimerax
        return visualize

    def _openChimerax(self, e=None):
        script = self._extra(RESULTS_DIR, CHIMERAX_CXC)
        program = next(filter(None, map(shutil.which, CHIMERAX_PROGRAMS)), None)
        if program is None:
            from pyworkflow.viewer import TextView
            return [TextView([script], title="ChimeraX not found: command file")]
        return [CommandView("%s %s &" % (program, script))]
