"""The GPU check's machinery, on a CPU: no GPU path runs here.

- ``scripts/gpu-check.sh`` stops at once, with status 1, where nvidia-smi is missing or lists
  no GPU, and refuses bad arguments with status 2;
- the RECOVAR commands of the offline driver are the ones the protocols build;
- phases keep to their limits and leave the reserves of the phases after them; a program
  that overruns is stopped and reported as a timeout;
- the figures are right on known cases; the simulated data match their truth;
- a wheel folder is checked against its manifest and installs without an index.

The end-to-end runs (``--allow-cpu --tiny``, both settings) take RECOVAR minutes and the
``--prepare`` budget needs PyPI: they are manual checks (README, "GPU check").
"""
import dataclasses
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scipion_reciprocal.formats.star import read_particles_star
from scipion_reciprocal.workflows.gpu_check import figures, plan as plans, wheels
from scipion_reciprocal.workflows.gpu_check.datasets import (simulate_classifier_data,
                                                              simulate_recovar_data)
from scipion_reciprocal.workflows.gpu_check.recovar_commands import (analyze_command,
                                                                      cuda_arch_flags,
                                                                      pipeline_command,
                                                                      recovar_log_facts)
from scipion_reciprocal.workflows.gpu_check.runner import (FAILED, OK, SKIPPED, TIMEOUT, CheckRun,
                                                           PhaseFailed, run_command)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu-check.sh"


# ---------------------------------------------------------------------------------- script
def _script(args, tmp_path, nvidia_smi=None):
    """Run gpu-check.sh with a PATH that has no nvidia-smi, or the given fake one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if nvidia_smi is not None:
        fake = bin_dir / "nvidia-smi"
        fake.write_text("#!/bin/sh\n" + nvidia_smi + "\n")
        fake.chmod(0o755)
    env = dict(os.environ, PATH="%s:/usr/bin:/bin" % bin_dir)
    started = time.monotonic()
    done = subprocess.run(["bash", str(SCRIPT)] + args, env=env, capture_output=True, text=True,
                          timeout=60)
    return done, time.monotonic() - started


@pytest.mark.parametrize("nvidia_smi", [None, 'echo "No devices were found"; exit 6'])
@pytest.mark.parametrize("args", [[], ["--wheels", "wheels"], ["--tiny"]])
def test_without_a_gpu_the_check_stops_at_once(tmp_path, nvidia_smi, args):
    if nvidia_smi is None and any(Path(p, "nvidia-smi").exists() for p in ("/usr/bin", "/bin")):
        pytest.skip("this machine has nvidia-smi in /usr/bin")
    out = tmp_path / "runs"
    done, seconds = _script(args + ["--out", str(out)], tmp_path, nvidia_smi)
    assert done.returncode == 1, done.stderr
    assert "no GPU found" in done.stderr and "needs an NVIDIA GPU" in done.stderr
    assert seconds < 10
    assert not out.exists()  # nothing was set up or written


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "unknown argument '--bogus'"),
    (["--prepare"], "Options:"),
    (["--prepare", "a", "--wheels", "b"], "two different machines"),
])
def test_bad_arguments_exit_2(tmp_path, args, message):
    done, _ = _script(args, tmp_path)
    assert done.returncode == 2 and message in done.stderr


def test_driver_arguments(tmp_path, capsys):
    from scipion_reciprocal.workflows.gpu_check.__main__ import main
    for args in (["scipion", "--out", str(tmp_path), "--budget", "0"],
                 ["offline", "--out", str(tmp_path), "--processes", "0"], ["nothing"]):
        with pytest.raises(SystemExit) as stopped:
            main(args)
        assert stopped.value.code == 2
    assert main(["install", str(tmp_path / "none"), "--site", str(tmp_path / "site")]) == 1
    assert "--prepare" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- commands
@pytest.fixture(scope="module")
def scipion_project(tmp_path_factory):
    from pyworkflow.project import Manager
    manager = Manager()
    return manager.createProject("gpu_check_commands_%d" % os.getpid())


def _captured(protocol, step):
    """The program and arguments ``step`` hands to runBackend (it runs nothing)."""
    from scipion_reciprocal.formats.recovar_results import RecovarResultError
    calls = []
    protocol.runBackend = lambda program, arguments, useGpu=None, cwd=None, gpus=None: \
        calls.append((program, arguments, useGpu))
    with pytest.raises(RecovarResultError):  # no job.json: nothing ran
        step()
    (program, arguments, useGpu), = calls
    words = program.split() + arguments.split()
    record = words.index("--record")  # the launcher's record of the run: the protocol's own
    return words[:record] + words[record + 2:], useGpu


def test_offline_commands_are_the_protocols_commands(scipion_project):
    from scipion_reciprocal.protocols import ProtRecovarAnalyze, ProtRecovarPipeline
    from scipion_reciprocal.protocols.protocol_recovar_pipeline import (MASK_CHOICES,
                                                                        UNINVERT_CHOICES)
    project = scipion_project
    os.chdir(project.getPath())  # the steps write their records in the protocols' folders
    for plan in (plans.FULL, plans.TINY):
        options = plans.RecovarOptions.of(plan)
        pipeline = project.newProtocol(
            ProtRecovarPipeline, maskType=MASK_CHOICES.index(options.mask),
            uninvertData=UNINVERT_CHOICES.index(options.uninvert), zdims=str(options.zdim),
            downsample=options.downsample)
        project.saveProtocol(pipeline)
        command, useGpu = _captured(pipeline, pipeline.pipelineStep)
        assert useGpu is False  # no GPU on this machine: the CPU variant
        assert command == pipeline_command(pipeline._getExtraPath("inputs"),
                                           pipeline.pipelineDir(), options, cpu=True)
        assert "--zdim" in command and command[command.index("--zdim") + 1] == str(plan.zdim)

        analyze = project.newProtocol(
            ProtRecovarAnalyze, zdim=options.zdim, nClusters=options.n_clusters,
            computeCenters=options.compute_centers, umap=options.umap,
            nTrajectories=options.trajectories)
        analyze.inputPipeline.set(pipeline)
        project.saveProtocol(analyze)
        command, _ = _captured(analyze, analyze.analyzeStep)
        assert command == analyze_command(pipeline.pipelineDir(), analyze.analysisDir(), options)
        assert "--skip-centers" in command and "--skip-umap" in command


def test_cuda_architectures_of_the_gpus_present():
    gpus = [{"compute_capability": "9.0"}, {"compute_capability": "9.0"},
            {"compute_capability": "8.6"}]
    assert cuda_arch_flags(gpus) == ("-gencode arch=compute_86,code=sm_86 "
                                     "-gencode arch=compute_90,code=sm_90")


def test_facts_read_from_recovar_logs(tmp_path):
    """Lines as RECOVAR 1.0.5 writes them in run.log (from a CPU run here)."""
    (tmp_path / "run.log").write_text(
        "2026-12-07 03:27:45,410.410 INFO cuda_env - log_backend: RECOVAR GPU backend: CPU (no "
        "GPU detected)\n"
        "2026-12-07 03:27:45,522.522 INFO parser_args - apply_memory_planning_args: GPU memory "
        "plan: backend=cpu, requested=auto GB, effective=11.00 GB (source=cpu_helper), n_pcs=131\n"
        "2026-12-07 03:27:45,544.544 INFO pipeline - standard_recovar_pipeline: number of images: 300\n"
        "2026-12-07 03:27:45,546.546 INFO helpers - report_memory_device: GPU mem in use:2; "
        "peak:7; total available:11, process mem in use:0\n"
        "2026-12-07 03:28:42,546.546 INFO helpers - report_memory_device: GPU mem in use:1; "
        "peak:3; total available:11, process mem in use:0\n")
    facts = recovar_log_facts(tmp_path)
    assert facts["backend"] == "CPU (no GPU detected)" and facts["images"] == "300"
    assert facts["memory_plan"].startswith("backend=cpu") and facts["jax_peak_gb"] == 7
    assert "recovar_timing" not in facts   # no job.json
    assert recovar_log_facts(tmp_path / "missing") == {}


def _recovar_python():
    from scipion_reciprocal.tests.test_recovar_backend import PREFIX
    return None if PREFIX is None else PREFIX / "bin" / "python"


@pytest.mark.skipif(_recovar_python() is None, reason="RECOVAR environment not installed")
def test_kernel_build_without_make_runs_the_makefiles_nvcc_line(tmp_path):
    """Where nvcc exists but make does not, the check compiles RECOVAR's kernel itself, into
    the cache folder RECOVAR searches (a stand-in nvcc records its arguments here)."""
    from scipion_reciprocal.workflows.gpu_check.recovar_commands import BUILD_KERNEL
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    nvcc = bin_dir / "nvcc"
    nvcc.write_text('#!/bin/sh\necho "$@" > %s/args\nwhile [ "$1" != "-o" ]; do shift; done\n'
                    ': > "$2"\n' % tmp_path)
    nvcc.chmod(0o755)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "JAX_PLATFORMS": "cpu",
           "RECOVAR_CUDA_CACHE_DIR": str(tmp_path / "cache"),
           "CUDA_ARCH": "-gencode arch=compute_90,code=sm_90"}
    done = subprocess.run([str(_recovar_python()), "-c", BUILD_KERNEL], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    built = json.loads(done.stdout.strip().splitlines()[-1])
    assert built == {"library": str(tmp_path / "cache" / "libcuda_backproject.so"),
                     "built_with": "nvcc (no make here)"}
    args = (tmp_path / "args").read_text().split()
    assert args[:6] == ["-O3", "-std=c++17", "-Xcompiler", "-fPIC", "--shared", "-gencode"]
    assert "arch=compute_90,code=sm_90" in args and args[-1].endswith("cuda_backproject.cu")
    assert any(a.startswith("-I") and a.endswith("include") for a in args)


# ---------------------------------------------------------------------------------- phases
def _plan(budget, **limits):
    phases = tuple(plans.Phase(name, limit, reserve) for name, (limit, reserve) in limits.items())
    return dataclasses.replace(plans.TINY, budget=budget, phases=phases)


def test_limits_leave_the_reserves_of_later_phases(tmp_path):
    plan = _plan(100, a=(80, 5), b=(50, 30), c=(40, 20))
    run = CheckRun(plan, "test", tmp_path, ["a", "b", "c"], log=lambda *_: None)
    assert run.limit_for("a") == pytest.approx(50, abs=1)   # 100 - (30 + 20) kept back
    assert run.limit_for("b") == pytest.approx(50, abs=1)   # its own limit
    assert run.limit_for("c") == pytest.approx(40, abs=1)
    run.started -= 90                                        # 10 s left
    assert run.limit_for("a") < 0 and run.limit_for("c") == pytest.approx(10, abs=1)
    run.run("a", lambda limit: {"message": "never"})
    assert run.report["phases"][-1]["status"] == SKIPPED
    assert "budget" in run.report["phases"][-1]["message"]
    run.sampler.stop()


def test_phases_report_success_failure_and_overruns(tmp_path):
    plan = _plan(600, ok=(60, 1), fail=(60, 1), slow=(2, 1))
    log = []
    run = CheckRun(plan, "test", tmp_path, ["ok", "fail", "slow"], log=log.append)
    assert run.run("ok", lambda limit: {"value": 3, "message": "fine"}) == {"value": 3}
    assert run.run("fail", lambda limit: (_ for _ in ()).throw(PhaseFailed("broken input"))) is None
    started = time.monotonic()
    assert run.run("slow", lambda limit: run_command(
        ["sleep", "30"], limit, tmp_path / "logs" / "slow.log")) is None
    assert time.monotonic() - started < 10   # the program was killed at its 2 s limit
    status = run.finish()
    phases = {p["name"]: p for p in json.loads((tmp_path / "gpu-check.json").read_text())["phases"]}
    assert phases["ok"]["status"] == OK and phases["ok"]["details"] == {"value": 3}
    assert phases["fail"]["status"] == FAILED and phases["fail"]["message"] == "broken input"
    assert phases["slow"]["status"] == TIMEOUT and phases["slow"]["wall_s"] < 10
    assert all(p["gpu_peak_mib"] is None for p in phases.values())   # no nvidia-smi here
    assert all(p["cpu_s"] >= 0 for p in phases.values())
    assert status == 1
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert report["status"] == "complete" and report["machine"]["gpus"] == []
    assert any("fine" in line for line in log) and any("Total" in line for line in log)


def test_a_body_that_overruns_is_interrupted(tmp_path, monkeypatch):
    from scipion_reciprocal.workflows.gpu_check import runner
    monkeypatch.setattr(runner, "GRACE", 0.5)
    run = CheckRun(_plan(600, loop=(1, 0.5)), "test", tmp_path, ["loop"], log=lambda *_: None,
                   detached=["loop"])
    started = time.monotonic()
    run.run("loop", lambda limit: time.sleep(20))
    assert time.monotonic() - started < 5
    assert run.report["phases"][-1]["status"] == TIMEOUT
    assert run.report["phases"][-1]["cpu_s"] is None   # a phase of detached programs
    run.sampler.stop()


def test_a_failing_program_reports_its_log_tail(tmp_path):
    with pytest.raises(PhaseFailed, match="(?s)exited with 3.*the reason"):
        run_command([sys.executable, "-c", "print('the reason'); raise SystemExit(3)"], 30,
                    tmp_path / "fail.log")


# ---------------------------------------------------------------------------------- figures
def test_mean_vs_truth_sees_the_2x_magnification():
    from scipion_reciprocal.simulate.molecule import molecule_maps
    maps = molecule_maps(2, 24, 4.0, seed=0)
    states = np.array([0] * 30 + [1] * 10)
    truth = 0.75 * maps[0] + 0.25 * maps[1]
    good = figures.mean_vs_truth(3.0 * truth + 0.1, maps, states, 4.0, 16.0)
    assert good["mean_vs_truth"] > 0.999 and good["mean_vs_truth_magnified_2x"] < 0.9
    wrong = figures.mean_vs_truth(figures.magnified(truth, 2.0), maps, states, 4.0, 16.0)
    assert wrong["mean_vs_truth_magnified_2x"] > 0.999 and wrong["mean_vs_truth"] < 0.9
    with pytest.raises(ValueError, match="voxels"):
        figures.mean_vs_truth(truth[:-2, :-2, :-2], maps, states, 4.0, 16.0)


def test_kmeans_precision_and_pick_figures():
    states = np.array([0, 0, 1, 1, 2, 2])
    assert figures.kmeans_agreement([5, 5, 3, 3, 1, 1], states) == {
        "kmeans_ari": 1.0, "kmeans_particles": 6}
    assert figures.kmeans_agreement([5, 5, 3, -1, 1, -1], states)["kmeans_particles"] == 4
    found = figures.precision_recall([1, 1, 1, 0, 0], [1, 1, 0, 1, 0])
    assert found == {"precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3), "n": 5}
    assert figures.precision_recall([0, 0], [1, 0])["precision"] is None
    truth = pd.DataFrame({"micrograph": ["a", "a", "b"], "x": [100, 300, 50], "y": [100, 300, 50]})
    picks = pd.DataFrame({"micrograph": ["a", "a", "b", "b"], "x": [104, 500, 50, 52],
                          "y": [98, 500, 80, 50]})
    found = figures.pick_figures(picks, truth, box=32)
    assert (found["n_picks"], found["n_true"]) == (4, 3)
    assert found["precision"] == pytest.approx(2 / 4) and found["recall"] == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------------- data
MICRO = dataclasses.replace(plans.TINY, particles=40, micrograph_size=320,
                            particles_per_micrograph=6, training_micrographs=2,
                            picking_micrographs=2)


def test_simulated_data_match_their_truth(tmp_path):
    recovar = simulate_recovar_data(tmp_path / "r1", MICRO, processes=1)
    again = simulate_recovar_data(tmp_path / "r2", MICRO, processes=2)
    np.testing.assert_array_equal(recovar.states, again.states)
    table = read_particles_star(recovar.particles_star).particles
    assert len(table) == MICRO.particles and recovar.maps.shape == (2, 24, 24, 24)
    assert recovar.box == 24 and (recovar.project_dir / "Simulated/maps/state_1.mrc").exists()

    classifier = simulate_classifier_data(tmp_path / "c1", MICRO, processes=1)
    other = simulate_classifier_data(tmp_path / "c2", MICRO, processes=2)
    pd.testing.assert_frame_equal(classifier.truth, other.truth)
    assert classifier.n_training == 2 * 2 * 6 and classifier.n_held_out_good == 12
    assert len(read_particles_star(classifier.good_star).particles) == 12
    assert len(read_particles_star(classifier.held_out_star).particles) == 24
    mics = sorted(p.name for p in classifier.micrograph_folder.glob("*.mrc"))
    assert mics == ["mic_001.mrc", "mic_002.mrc"]
    assert sorted(set(classifier.truth["micrograph"])) == mics and len(classifier.truth) == 12


# ---------------------------------------------------------------------------------- wheels
def _fake_wheel(folder, name="tinypkg", version="1.0"):
    """A minimal valid wheel (one module) built by hand."""
    path = Path(folder) / ("%s-%s-py3-none-any.whl" % (name, version))
    info = "%s-%s.dist-info" % (name, version)
    files = {"%s.py" % name: "VALUE = 42\n",
             "%s/METADATA" % info: "Metadata-Version: 2.1\nName: %s\nVersion: %s\n" % (name, version),
             "%s/WHEEL" % info: "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files["%s/RECORD" % info] = "".join("%s,,\n" % f for f in list(files) + ["%s/RECORD" % info])
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
    return path


def test_wheel_folders_are_checked_and_installed_without_an_index(tmp_path):
    folder = tmp_path / "wheels"
    folder.mkdir()
    with pytest.raises(wheels.WheelError, match="--prepare"):
        wheels.checked_wheels(folder)
    wheel = _fake_wheel(folder)
    manifest = {"wheels": {wheel.name: wheel.stat().st_size}}
    (folder / wheels.MANIFEST).write_text(json.dumps(manifest))
    site = tmp_path / "site"
    assert wheels.install(folder, site, log=lambda *_: None) == 0
    done = subprocess.run([sys.executable, "-c", "import tinypkg; print(tinypkg.VALUE)"],
                          env=dict(os.environ, PYTHONPATH=str(site)), capture_output=True, text=True)
    assert done.stdout.strip() == "42"
    (folder / wheels.MANIFEST).write_text(json.dumps({"wheels": {wheel.name: 1}}))
    with pytest.raises(wheels.WheelError, match="not the one downloaded"):
        wheels.checked_wheels(folder)
    with pytest.raises(wheels.WheelError, match="not part of the set"):
        wheels.prepare(folder)   # refused before anything is downloaded


def test_the_offline_set_and_its_download_command():
    projects = [wheels.normalized(r.split("==")[0]) for r in wheels.REQUIREMENTS]
    assert "recovar" in projects and len(set(projects)) == len(projects)
    assert wheels.wheel_project("array_record-0.8.6-cp312-cp312-manylinux2014_x86_64.whl") == "array-record"
    command = wheels.download_command("/tmp/w", python="python3")
    assert command[:4] == ["python3", "-m", "pip", "download"]
    assert "--no-deps" in command and "--only-binary=:all:" in command
    assert command[command.index("--python-version") + 1] == "3.12"
    assert "recovar==1.0.5" in command
