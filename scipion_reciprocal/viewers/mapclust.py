"""Viewer of map similarity clustering."""
import os

from ..core.mapsim.results import CHIMERAX_CXC, SUMMARY_TXT
from ..plotting.mapclust import DENDROGRAM_PNG, HEATMAP_PNG, MDS_PNG, MONTAGE_PNG
from ..protocols import ProtMapClustering
from ..protocols.protocol_map_clustering import RESULTS_DIR
from .plot_files import PlotFilesViewer, anyName


class MapClusteringViewer(PlotFilesViewer):
    """Similarity heatmap ordered by the dendrogram, dendrogram with the cut, MDS scatter
    coloured by cluster, per-cluster slice montages, and the clusters' aligned members in
    ChimeraX (one model group and colour per cluster)."""
    _label = "map clustering viewer"
    _targets = [ProtMapClustering]
    _plotPatterns = tuple(os.path.join(RESULTS_DIR, anyName(name))
                          for name in (HEATMAP_PNG, DENDROGRAM_PNG, MDS_PNG, MONTAGE_PNG))
    _textFiles = (("Summary (text)", os.path.join(RESULTS_DIR, SUMMARY_TXT)),)
    _resultFolders = (RESULTS_DIR,)
    _chimeraxFile = ("Open the clusters in ChimeraX", os.path.join(RESULTS_DIR, CHIMERAX_CXC))
