"""A viewer base that shows the plots a protocol saved (PNG), its tables and HTML pages.

Protocols compute and save every figure with :mod:`scipion_reciprocal.plotting`; viewers
only display files, so what the GUI shows is exactly what the files hold. A viewer whose
protocol writes a result folder (``_resultFolders``) shows nothing of a folder without its
manifest (an interrupted or failed run) but says so.
"""
import glob
import os
import re
import shutil
import webbrowser

from pwem.viewers.plotter import EmPlotter
from pyworkflow.protocol import params
from pyworkflow.viewer import (DESKTOP_TKINTER, WEB_DJANGO, CommandView, ProtocolViewer,
                               TextView, View)

from ..formats.result_folder import folder_status

CHIMERAX_PROGRAMS = ("chimerax", "ChimeraX")


def anyName(template):
    """The glob pattern of the files a name template (``"sankey_{values}.png"``) stands for."""
    return re.sub(r"\{[^{}]*\}", "*", template)


def imageFigure(path, title=None):
    """An EmPlotter (matplotlib window) that shows the PNG ``path``."""
    import matplotlib.image as mpimg
    image = mpimg.imread(path)
    height, width = image.shape[:2]
    plotter = EmPlotter(x=1, y=1, figsize=(width / 100.0, height / 100.0),
                        windowTitle=title or os.path.basename(path))
    axes = plotter.getFigure().add_axes([0, 0, 1, 1])
    axes.imshow(image)
    axes.set_axis_off()
    return plotter


class BrowserView(View):
    """Opens a local HTML page in the web browser."""

    def __init__(self, path):
        View.__init__(self)
        self._path = os.path.abspath(path)

    def show(self):
        webbrowser.open("file://%s" % self._path)


class PlotFilesViewer(ProtocolViewer):
    """Lists the PNG files a protocol wrote (``_plotPatterns``) and shows the chosen one."""
    _environments = [DESKTOP_TKINTER, WEB_DJANGO]
    _plotPatterns = ()    # glob patterns relative to the protocol's extra folder
    _textFiles = ()       # (label, path relative to extra) shown in a text window
    _htmlFiles = ()       # (label, path relative to extra) opened in the browser
    _chimeraxFile = None  # (label, .cxc path relative to extra) run in ChimeraX
    _resultFolders = ()   # result folders (relative to extra; "" for extra) shown only complete

    def _defineParams(self, form):
        form.addSection(label="Visualization")
        incomplete = self.incompleteReason()
        names = self.plotNames() or ["(no plots yet)"]
        form.addParam("plot", params.EnumParam, choices=names, default=0,
                      label="Plot (results incomplete)" if incomplete else "Plot",
                      help=("%s: run the protocol again." % incomplete if incomplete else
                            "Figures written by the protocol (PNG, in its extra folder)."))
        for i, (label, _) in enumerate(self._textFiles):
            form.addParam("text%d" % i, params.LabelParam, label=label)
        for i, (label, _) in enumerate(self._htmlFiles):
            form.addParam("html%d" % i, params.LabelParam, label=label)
        if self._chimeraxFile:
            form.addParam("chimerax", params.LabelParam, label=self._chimeraxFile[0],
                          help="Runs the ChimeraX command file written by the protocol when "
                               "ChimeraX is on the PATH; otherwise shows the file.")

    def _getVisualizeDict(self):
        visualize = {"plot": self._showPlot}
        for i, (_, path) in enumerate(self._textFiles):
            visualize["text%d" % i] = self._ifComplete(
                lambda e=None, p=path: [TextView([self._extra(p)])])
        for i, (_, path) in enumerate(self._htmlFiles):
            visualize["html%d" % i] = self._ifComplete(
                lambda e=None, p=path: [BrowserView(self._extra(p))])
        if self._chimeraxFile:
            visualize["chimerax"] = self._ifComplete(self._openChimerax)
        return visualize

    def incompleteReason(self):
        """Why a result folder of the protocol is incomplete ('' when all are complete)."""
        for folder in self._resultFolders:
            status = folder_status(self._extra(folder) if folder else self._extra())
            if not status:
                return status.reason
        return ""

    def _incompleteMessage(self):
        """[a message view] when a result folder is incomplete, else None."""
        reason = self.incompleteReason()
        if reason:
            return [self.errorMessage("%s. Its files are not shown: run the protocol again."
                                      % reason, title="Incomplete results")]
        return None

    def _ifComplete(self, show):
        """``show``, or the message that the results are incomplete."""
        return lambda e=None: self._incompleteMessage() or show(e)

    def _openChimerax(self, e=None):
        script = self._extra(self._chimeraxFile[1])
        program = next(filter(None, map(shutil.which, CHIMERAX_PROGRAMS)), None)
        if program is None:
            return [TextView([script], title="ChimeraX not found: command file")]
        return [CommandView("%s %s &" % (program, script))]

    def _extra(self, *paths):
        return self.protocol._getExtraPath(*paths)

    def plotFiles(self):
        files = []
        for pattern in self._plotPatterns:
            files += sorted(glob.glob(self._extra(pattern)))
        return files

    def plotNames(self):
        return [os.path.splitext(os.path.basename(f))[0] for f in self.plotFiles()]

    def _showPlot(self, e=None):
        incomplete = self._incompleteMessage()
        if incomplete:
            return incomplete
        files = self.plotFiles()
        if not files:
            return [self.errorMessage("The protocol has not written any plot yet.")]
        return [imageFigure(files[self.plot.get()])]
