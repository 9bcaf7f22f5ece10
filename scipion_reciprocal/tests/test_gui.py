"""The Scipion project window, under Xvfb, on a project made by the demo.

Skips only when no X server can be started (no Xvfb).  Screenshots go to
``$SCIPION_RECIPROCAL_ARTIFACTS`` (default: ``test-artifacts/`` in the working directory).
"""
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from scipion_reciprocal.constants import PROTOCOL_TREE_SECTION


# Scipion's projects chdir; remember where the tests were started from.
_START_DIR = Path.cwd()


def artifacts_dir():
    folder = Path(os.environ.get("SCIPION_RECIPROCAL_ARTIFACTS") or _START_DIR / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def xserver():
    """A private Xvfb display; DISPLAY points at it for the module's tests."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    for number in range(90, 130):
        if not os.path.exists("/tmp/.X11-unix/X%d" % number) and not os.path.exists("/tmp/.X%d-lock" % number):
            break
    process = subprocess.Popen(["Xvfb", ":%d" % number, "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    socket = Path("/tmp/.X11-unix/X%d" % number)
    for _ in range(100):
        if socket.exists() or process.poll() is not None:
            break
        time.sleep(0.1)
    if not socket.exists():
        process.kill()
        pytest.skip("Xvfb could not be started")
    previous = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = ":%d" % number
    yield ":%d" % number
    process.terminate()
    process.wait(timeout=10)
    if previous is None:
        os.environ.pop("DISPLAY", None)
    else:
        os.environ["DISPLAY"] = previous


def screenshot(display, path):
    """Save the whole virtual screen as PNG (xwd + ImageMagick's convert)."""
    if not (shutil.which("xwd") and shutil.which("convert")):
        pytest.skip("xwd/convert not installed (apt-get install x11-apps imagemagick)")
    xwd = subprocess.run(["xwd", "-root", "-silent", "-display", display], capture_output=True,
                         check=True)
    subprocess.run(["convert", "xwd:-", "png:%s" % path], input=xwd.stdout, check=True)
    return path


def tree_texts(tree, item=""):
    """(text, item id) of every node of a ttk tree, depth first."""
    for child in tree.get_children(item):
        yield tree.item(child, "text").strip(), child
        yield from tree_texts(tree, child)


@pytest.fixture(scope="module")
def demo_project():
    from scipion_reciprocal.workflows.demo import run_demo
    data = tempfile.mkdtemp(prefix="reciprocal-gui-demo-")
    return run_demo("gui_demo", data_dir=data, backends=False, log=lambda message: None)


def protocols_conf_texts():
    """{protocol class: text} of the plugin's protocols.conf entries."""
    import configparser
    import json

    import scipion_reciprocal
    conf = configparser.ConfigParser()
    conf.read(Path(scipion_reciprocal.__file__).with_name("protocols.conf"))
    texts = {}

    def walk(node):
        if node.get("tag") == "protocol":
            texts[node["value"]] = node["text"]
        for child in node.get("children", []):
            walk(child)

    for value in conf["PROTOCOLS"].values():
        for node in json.loads(value):
            walk(node)
    return texts


def _text_right_edge(tree, item, depth):
    """Where an item's text ends in the tree, in pixels: indentation, icon, text."""
    import tkinter.font as tkfont
    from tkinter import ttk

    from pyworkflow.gui import LIST_TREEVIEW
    style = ttk.Style(tree)
    indent = int(style.lookup(LIST_TREEVIEW, "indent") or style.lookup("Treeview", "indent") or 20)
    font = tkfont.nametofont(style.lookup(LIST_TREEVIEW, "font") or "TkDefaultFont")
    images = [tree.tag_configure(tag, "image") for tag in tree.item(item, "tags")]
    icon = max([int(tree.tk.call("image", "width", i[0] if isinstance(i, tuple) else i))
                for i in images if i] or [0])
    return (depth + 1) * indent + icon + 4 + font.measure(tree.item(item, "text"))


def test_project_window_shows_plugin_section(xserver, demo_project):
    from pyworkflow.gui.project import ProjectWindow

    window = ProjectWindow(str(demo_project.project_path))
    try:
        window.root.geometry("1600x1000+0+0")
        window.root.deiconify()
        tree = window.getViewWidget().protTree
        nodes = list(tree_texts(tree))
        sections = [item for text, item in nodes if text == PROTOCOL_TREE_SECTION]
        assert sections, "no '%s' section in the protocol tree" % PROTOCOL_TREE_SECTION
        for _, item in tree_texts(tree, ""):
            tree.item(item, open=item == sections[0] or tree.parent(item) == sections[0])
        tree.see(sections[0])
        for _ in range(20):
            window.root.update()
            time.sleep(0.05)
        png = screenshot(xserver, artifacts_dir() / "gui_project_window.png")
        assert png.stat().st_size > 20000
        # Every protocol reads the short text protocols.conf gives it, whole within the tree.
        expected = protocols_conf_texts()
        shown = {item.split(".")[-1]: (text, item) for text, item in tree_texts(tree, sections[0])
                 if item.split(".")[-1] in expected}
        assert {name: text for name, (text, _) in shown.items()} == expected
        width = tree.winfo_width()
        depth = lambda item: 0 if not tree.parent(item) else 1 + depth(tree.parent(item))
        cut = {text: _text_right_edge(tree, item, depth(item)) for text, item in shown.values()
               if _text_right_edge(tree, item, depth(item)) > width}
        assert width > 100 and not cut, "wider than the tree (%d px): %s" % (width, cut)
        # The demo's runs are in the project the window shows.
        runs = {run.getObjLabel() for run in window.project.getRuns()}
        assert "export particles to RELION" in runs
    finally:
        window.root.destroy()
        # The project window switched matplotlib to TkAgg; later tests draw headless.
        from pyworkflow.gui.plotter import Plotter
        Plotter.setBackend("Agg")


# ----------------------------------------------------------------- end to end (issue 7)
def _plugin_classes(module, base):
    import inspect
    return sorted((obj for obj in vars(module).values()
                   if inspect.isclass(obj) and issubclass(obj, base) and obj is not base),
                  key=lambda cls: cls.__name__)


@pytest.fixture(scope="module")
def full_project(demo_project):
    """The demo project plus the particle classifier chain (from its workflow template) when
    the classifier environment is installed: a finished run of every non-RECOVAR protocol."""
    from scipion_reciprocal import Plugin
    from scipion_reciprocal.workflows import templates

    from pyworkflow.project import Manager
    project = Manager().loadProject(demo_project.project_path.name)
    if not Plugin.validateBackend("classifier"):
        data = demo_project.dataset
        templates.add_template(
            project, "classifier_train_pick", goodStar=data.good_star, badStar=data.bad_star,
            particlesStar=data.picked_star, micsDir=data.micrograph_paths[0].parent,
            pixelSize=data.particles.pixel_size, box=32, epochs=5)
        templates.run_project(project, log=lambda message: None)
    return project


class _TkErrors:
    """Collects exceptions raised in Tk callbacks (Tk only prints them)."""

    def __init__(self, root):
        self.errors = []
        root.report_callback_exception = lambda *info: self.errors.append(info[1])


def _run_nested(window, start, inspect, delay_ms=1500):
    """Call ``start`` (which enters a nested Tk main loop, as the GUI's forms do), then after
    ``delay_ms`` call ``inspect(new_toplevels)``, destroy those windows and leave the loop."""
    import tkinter as tk
    root = window.root
    before = set(root.winfo_children())
    seen = {}

    def grab():
        new = [w for w in root.winfo_children() if w not in before and isinstance(w, tk.Toplevel)]
        try:
            seen["result"] = inspect(new)
        except Exception as error:  # reported after the loop ends
            seen["error"] = error
        finally:
            for widget in new:
                widget.destroy()
            root.quit()

    root.after(delay_ms, grab)
    start()
    if "error" in seen:
        raise seen["error"]
    return seen.get("result")


def test_every_protocol_form_opens_from_the_tree(xserver, full_project):
    from types import SimpleNamespace

    from pwem.protocols import EMProtocol
    from pyworkflow.gui.project import ProjectWindow

    import scipion_reciprocal.protocols as plugin_protocols

    window = ProjectWindow(full_project.getPath())
    errors = _TkErrors(window.root)
    try:
        window.root.geometry("1600x1000+0+0")
        window.root.deiconify()
        view = window.getViewWidget()
        tree = view.protTree
        section = next(item for text, item in tree_texts(tree) if text == PROTOCOL_TREE_SECTION)
        domain_protocols = window.project.getDomain().getProtocols()
        items = {}
        for _, item in tree_texts(tree, section):
            name = item.split(".")[-1]
            if name in domain_protocols:
                items[name] = item
        expected = {cls.__name__ for cls in _plugin_classes(plugin_protocols, EMProtocol)}
        assert expected <= set(items), expected - set(items)
        opened = {}
        for name in sorted(expected):
            tree.selection_set(items[name])
            tree.focus(items[name])

            def inspect(new, name=name):
                titles = [w.title() for w in new]
                assert len(new) == 1 and name in titles[0], titles
                new[0].update()
                if name == "ProtReciprocalAnalysis":
                    screenshot(xserver, artifacts_dir() / "gui_form_reciprocal.png")
                return titles[0]

            opened[name] = _run_nested(
                window, lambda: view._protocolItemClick(SimpleNamespace(widget=tree)), inspect)
        assert set(opened) == expected
        assert not errors.errors, errors.errors
        assert (artifacts_dir() / "gui_form_reciprocal.png").stat().st_size > 20000
    finally:
        window.root.destroy()
        from pyworkflow.gui.plotter import Plotter
        Plotter.setBackend("Agg")


def test_project_graph_and_every_viewer_render(xserver, full_project):
    import matplotlib.pyplot as plt
    from pyworkflow.gui.project import ProjectWindow
    from pyworkflow.viewer import ProtocolViewer

    import scipion_reciprocal.viewers as plugin_viewers

    window = ProjectWindow(full_project.getPath())
    errors = _TkErrors(window.root)
    try:
        window.root.geometry("1600x1000+0+0")
        window.root.deiconify()
        view = window.getViewWidget()
        view.updateRunsGraph(True)
        for _ in range(20):
            window.root.update()
            time.sleep(0.05)
        graph = screenshot(xserver, artifacts_dir() / "gui_project_graph.png")
        assert graph.stat().st_size > 20000
        runs = [run for run in window.project.getRuns() if run.isFinished()]
        rendered, untested = {}, []
        for viewer_class in _plugin_classes(plugin_viewers, ProtocolViewer):
            targets = [run for run in runs if isinstance(run, tuple(viewer_class._targets))]
            if not targets:
                untested.append(viewer_class.__name__)
                continue
            viewer = viewer_class(project=window.project, protocol=targets[0])
            viewer.setProtocol(targets[0])
            names = viewer.plotNames()
            assert names, "%s: no plots for %s" % (viewer_class.__name__, targets[0])
            for index in range(len(names)):
                viewer.plot.set(index)
                plotters = viewer._getVisualizeDict()["plot"]()
                for plotter in plotters:
                    plotter.show()
                    window.root.update()
                    assert plotter.getFigure().canvas.get_width_height()[0] > 100
                    plt.close(plotter.getFigure())
            rendered[viewer_class.__name__] = len(names)
        # Every viewer of a protocol the project ran drew every plot; only RECOVAR's viewers
        # (no RECOVAR run in this project) may be left.
        assert all(name.startswith("Recovar") for name in untested), untested
        assert {"ReciprocalAnalysisViewer", "MapClusteringViewer",
                "RelionClassificationsViewer", "CryosparcClassificationsViewer"} <= set(rendered)
        # class sizes, posteriors and maps of the 3D job, sizes, posteriors and averages of
        # the 2D one
        assert rendered["CryosparcClassificationsViewer"] == 6, rendered
        from scipion_reciprocal import Plugin
        if not Plugin.validateBackend("classifier"):
            assert {"ClassifierTrainingViewer", "ClassifierScoresViewer",
                    "ClassifierPickingViewer"} <= set(rendered), rendered

        # One viewer as the user sees it: its form, then a plot window, on screen.
        analysis = next(run for run in runs if run.getClassName() == "ProtReciprocalAnalysis")
        viewer = plugin_viewers.ReciprocalAnalysisViewer(project=window.project,
                                                         protocol=analysis)

        def inspect(new):
            assert len(new) == 1 and "Protocol Viewer" in new[0].title(), \
                [w.title() for w in new]
            viewer._visualizeParam("plot")
            for _ in range(20):
                window.root.update()
                time.sleep(0.05)
            shot = screenshot(xserver, artifacts_dir() / "gui_viewer_reciprocal.png")
            plt.close("all")
            return shot

        shot = _run_nested(window, lambda: viewer.visualize(analysis, windows=window), inspect,
                           delay_ms=2500)
        assert shot.stat().st_size > 20000
        assert not errors.errors, errors.errors
    finally:
        window.root.destroy()
        from pyworkflow.gui.plotter import Plotter
        Plotter.setBackend("Agg")
