"""pytest harness: a throw-away Scipion home, configured before pyworkflow is imported.

Projects, logs and test outputs go to a temporary folder.  Backend environments are looked up
in ``$SCIPION_SOFTWARE/em`` when SCIPION_SOFTWARE is set (the README's test command points it
at the checkout's ``.scipion-home/software``), so they are installed once and reused.
"""
import os
import shutil
import tempfile

import pytest

from scipion_reciprocal import scipion_setup

_TEST_HOME = tempfile.mkdtemp(prefix="scipion-reciprocal-tests-")
scipion_setup.configure(home=_TEST_HOME, software=os.environ.get("SCIPION_SOFTWARE") or None,
                        force=True)
# RECOVAR runs (in protocols, through the environment they inherit) share JAX's compiled
# kernels within the session: at test sizes compiling is most of a run (a repeated 16 px
# pipeline took 34 s of CPU instead of 80).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(_TEST_HOME, "jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")


@pytest.fixture(autouse=True)
def _restore_cwd():
    """Scipion's test projects chdir into the project; undo it after every test."""
    cwd = os.getcwd()
    yield
    os.chdir(cwd)


def pytest_sessionfinish(session, exitstatus):
    if not os.environ.get("SCIPION_RECIPROCAL_KEEP_TEST_HOME"):
        shutil.rmtree(_TEST_HOME, ignore_errors=True)
