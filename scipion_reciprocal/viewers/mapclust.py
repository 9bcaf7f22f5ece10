"""Viewer of map similarity clustering."""
from ..core.mapsim.results import CHIMERAX_CXC, SUMMARY_TXT
from ..protocols import ProtMapClustering
from ..protocols.protocol_map_clustering import RESULTS_DIR
from .plot_files import PlotFilesViewer


class MapClusteringViewer(PlotFilesViewer):
    """Similarity heatmap ordered by the dendrogram, dendrogram with the cut, MDS scatter
    coloured by cluster, per-cluster slice montages, and the clusters' aligned members in
    ChimeraX (one model group and colour per cluster)."""
    _label = "map clustering viewer"
    _targets = [ProtMapClustering]
    _plotPatterns = ("%s/similarity_matrix_heatmap.png" % RESULTS_DIR,
                     "%s/dendrogram.png" % RESULTS_DIR, "%s/mds.png" % RESULTS_DIR,
                     "%s/cluster_*_montage.png" % RESULTS_DIR)
    _textFiles = (("Summary (text)", "%s/%s" % (RESULTS_DIR, SUMMARY_TXT)),)
    _resultFolders = (RESULTS_DIR,)
    _chimeraxFile = ("Open the clusters in ChimeraX", "%s/%s" % (RESULTS_DIR, CHIMERAX_CXC))
