"""``pip install scipion-reciprocal`` alone, as a user does it, gives a working demo and templates.

A wheel of this checkout is installed without extras into a new virtual environment (its
dependencies from the package index pip is configured with), and with a new Scipion home:
``scipion-reciprocal demo --no-backends`` runs every protocol that needs no backend, and each
shipped template loads and starts (its RELION particle import, which needs scipion-em-relion,
runs; the backend steps are left). Nothing of the checkout or of the test environment is on
the path there. About 2-3 minutes on 2 cores; skips when the package index cannot be reached.
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 900

TEMPLATE_CHECK = r"""
import json, sys
from pathlib import Path
from scipion_reciprocal import scipion_setup
scipion_setup.configure()
from scipion_reciprocal.simulate.dataset import build_demo_project
from scipion_reciprocal.workflows import templates

data = build_demo_project(Path(sys.argv[1]), seed=3, n_particles=30, n_micrographs=2)
values = {"relionDir": data.project_dir, "goodStar": data.good_star, "badStar": data.bad_star,
          "particlesStar": data.picked_star, "micsDir": data.micrograph_paths[0].parent,
          "pixelSize": data.particles.pixel_size}
loaded = {}
for name in templates.template_names():
    fields = templates.template_fields(name)
    project = templates.create_project(name, "tpl_" + name, **{
        alias: str(value) for alias, value in values.items() if alias in fields})
    loaded[name] = sorted(run.getClassName() for run in project.getRuns())
# The classifier template's first RELION particle import, run.
project = templates.create_project("classifier_train_pick", "tpl_run", **{
    alias: str(value) for alias, value in values.items()
    if alias in templates.template_fields("classifier_train_pick")})
first = next(run for run in project.getRuns() if run.getClassName() == "ProtImportParticles")
project.launchProtocol(first, wait=True)
first = project.getProtocol(first.getObjId())
print(json.dumps({"loaded": loaded, "import": first.getStatus(),
                  "particles": first.outputParticles.getSize() if first.isFinished() else 0}))
"""


def _run(command, env, cwd, what):
    start = time.time()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert done.returncode == 0, "%s failed (%d):\n%s\n%s" % (what, done.returncode,
                                                            done.stdout[-3000:], done.stderr[-3000:])
    print("%s: %.0f s" % (what, time.time() - start))
    return done.stdout


def _clean_environ(venv):
    """What a user's shell has: no Scipion variables, no PYTHONPATH, the venv first on PATH."""
    env = {key: os.environ[key] for key in ("HOME", "LANG", "LC_ALL", "TMPDIR", "PIP_CERT",
                                            "PIP_FIND_LINKS", "PIP_INDEX_URL",
                                            "PIP_EXTRA_INDEX_URL") if key in os.environ}
    env["PATH"] = "%s:/usr/local/bin:/usr/bin:/bin" % (venv / "bin")
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv, environment) of a fresh install of this checkout's wheel, without extras."""
    if not (ROOT / "setup.py").is_file():
        pytest.skip("not a source checkout (no setup.py)")
    work = tmp_path_factory.mktemp("packaging")
    venv = work / "venv"
    env = _clean_environ(venv)
    probe = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                            "-d", str(work / "probe"), "scipion-em-relion"],
                           env=env, capture_output=True, text=True, timeout=300)
    if probe.returncode:
        pytest.skip("the package index cannot be reached: %s"
                    % (probe.stderr.strip().splitlines() or ["?"])[-1])
    source = work / "source"
    source.mkdir()
    shutil.copy(ROOT / "setup.py", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(ROOT / "scipion_reciprocal", source / "scipion_reciprocal",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(work / "dist"),
          str(source)], env, work, "wheel of the checkout")
    wheel, = (work / "dist").glob("scipion_reciprocal-*.whl")
    # The test's pip installs into the new environment (faster than bootstrapping its own).
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], env, work, "venv")
    _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
          "--quiet", "--no-compile", str(wheel)], env, work, "pip install (no extras)")
    return venv, env, work


def test_demo_runs_after_pip_install_alone(installed):
    venv, env, work = installed
    where = _run([str(venv / "bin" / "python"), "-c", "import scipion_reciprocal, relion; "
                  "print(scipion_reciprocal.__file__)"], env, work, "import")
    assert Path(where.strip()).is_relative_to(venv), where  # the installed copy, not the checkout
    home, data = work / "home", work / "data"
    out = _run(["bash", "-c", 'eval "$(scipion-reciprocal env --home %s)" && '
                'scipion-reciprocal demo --no-backends --data-dir %s' % (home, data)],
               env, work, "scipion-reciprocal demo --no-backends")
    assert "Demo finished" in out, out
    project = home / "data" / "projects" / "reciprocal_demo"
    results = {}
    for line in out.splitlines():
        label, _, path = line.strip().rpartition("  ")
        if path.startswith("Runs/"):
            results[label.strip()] = project / path
    assert {"import simulated particles", "export particles to RELION",
            "import RELION classifications", "reciprocal class analysis",
            "map similarity clustering"} <= set(results), out
    assert results["export particles to RELION"].is_file()
    assert (results["reciprocal class analysis"] / "consensus_groups.csv").is_file()
    assert (results["map similarity clustering"] / "cluster_results.csv").is_file()


def test_templates_load_and_start_after_pip_install_alone(installed):
    venv, env, work = installed
    out = _run(["bash", "-c", 'eval "$(scipion-reciprocal env --home %s)" && python -c %s %s'
                % (work / "home", _quote(TEMPLATE_CHECK), work / "template_data")],
               env, work, "templates")
    found = json.loads(out.strip().splitlines()[-1])
    # Every template of the checkout is in the wheel and loads.
    assert sorted(found["loaded"]) == sorted(
        path.name[:-len(".json.template")]
        for path in (ROOT / "scipion_reciprocal" / "templates").glob("*.json.template"))
    assert "ProtTrainParticleClassifier" in found["loaded"]["classifier_train_pick"]
    assert found["import"] == "finished" and found["particles"] > 0, found


def _quote(text):
    import shlex
    return shlex.quote(text)
