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


def test_project_window_shows_plugin_section(xserver, demo_project):
    from pyworkflow.gui.project import ProjectWindow
    from scipion_reciprocal.protocols import ProtBackendCheck, ProtExportParticlesStar

    window = ProjectWindow(str(demo_project.project_path))
    try:
        window.root.geometry("1600x1000+0+0")
        window.root.deiconify()
        tree = window.getViewWidget().protTree
        nodes = list(tree_texts(tree))
        sections = [item for text, item in nodes if text == PROTOCOL_TREE_SECTION]
        assert sections, "no '%s' section in the protocol tree" % PROTOCOL_TREE_SECTION
        # Protocol nodes read "<plugin> - <label>".
        labels = {text.split(" - ", 1)[-1] for text, _ in tree_texts(tree, sections[0])}
        assert {ProtExportParticlesStar._label, ProtBackendCheck._label} <= labels, labels
        for _, item in tree_texts(tree, ""):
            tree.item(item, open=item == sections[0] or tree.parent(item) == sections[0])
        tree.see(sections[0])
        for _ in range(20):
            window.root.update()
            time.sleep(0.05)
        # The demo's runs are in the project the window shows.
        runs = {run.getObjLabel() for run in window.project.getRuns()}
        assert "export particles to RELION" in runs
        png = screenshot(xserver, artifacts_dir() / "gui_project_window.png")
        assert png.stat().st_size > 20000
    finally:
        window.root.destroy()
        # The project window switched matplotlib to TkAgg; later tests draw headless.
        from pyworkflow.gui.plotter import Plotter
        Plotter.setBackend("Agg")
