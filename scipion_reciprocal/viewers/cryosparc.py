"""Viewer of imported cryoSPARC classifications."""
import glob

from pyworkflow.viewer import TextView

from ..plotting.classes import (AVERAGES_PNG, CONFIDENCE_PNG, PLOTS_DIR, SIZES_CSV, SIZES_PNG,
                                SLICES_PNG)
from ..protocols import ProtImportCryosparcClassifications
from .plot_files import PlotFilesViewer, anyName


class CryosparcClassificationsViewer(PlotFilesViewer):
    """What to check after importing cryoSPARC classifications, per job: class sizes, how
    sure the class assignments are (posterior of the assigned class, per class), and the
    class volumes (central slices) or 2D class averages; the class-size tables as text."""
    _label = "cryoSPARC classifications viewer"
    _targets = [ProtImportCryosparcClassifications]
    _plotPatterns = tuple("%s/%s" % (PLOTS_DIR, anyName(name))
                          for name in (SIZES_PNG, CONFIDENCE_PNG, SLICES_PNG, AVERAGES_PNG))
    #: Every job's table, opened together (the path is a glob pattern).
    _textFiles = (("Class sizes (tables)", anyName(SIZES_CSV)),)
    _resultFolders = ("",)

    def _getVisualizeDict(self):
        visualize = PlotFilesViewer._getVisualizeDict(self)
        visualize["text0"] = self._ifComplete(self._showSizeTables)
        return visualize

    def _showSizeTables(self, e=None):
        files = sorted(glob.glob(self._extra(self._textFiles[0][1])))
        if not files:
            return [self.errorMessage("The protocol has not written any table yet.")]
        return [TextView(files, title="Class sizes")]
