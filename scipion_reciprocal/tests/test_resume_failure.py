"""Resume after a crash and re-run after a failure, through Scipion's launch path.

The protocol is the RELION classifications import: four steps (find the jobs, then one
output step per job), each output step a couple of seconds on 3000 particles.

- kill: the protocol process is killed (SIGKILL) while the second job's output step runs;
  Scipion marks the run failed; continue mode (MODE_RESUME) runs the remaining steps only (the
  finished steps keep their start and end times) and registers each output once.
- failure: one job's data STAR is corrupted after the form validated; the run fails in that
  job's step with the file named, the project still loads, only the outputs of the finished
  steps are registered, and after the file is repaired the same run continues to the end.
"""
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

JOBS = ("job085", "job086", "job087")
N_PARTICLES = 3000


@pytest.fixture(scope="module")
def dataset():
    from scipion_reciprocal.simulate.dataset import build_demo_project
    folder = Path(tempfile.mkdtemp(prefix="reciprocal-resume-"))
    return build_demo_project(folder / "relion", seed=5, n_particles=N_PARTICLES,
                              n_micrographs=1, n_iterations=2)


def new_project(name):
    from pyworkflow.project import Manager
    manager = Manager()
    if manager.hasProject(name):
        manager.deleteProject(name)
    project = manager.createProject(name)
    os.chdir(project.getPath())
    return project


def new_import(project, dataset):
    from scipion_reciprocal.protocols import ProtImportRelionClassifications
    return project.newProtocol(ProtImportRelionClassifications,
                               relionDir=str(dataset.project_dir), jobs="85 86 87")


def steps(protocol):
    """(function, arguments, status, start, end) of every step in the run's steps database."""
    with sqlite3.connect(protocol.getStepsFile()) as conn:
        try:
            return conn.execute("SELECT c09, c10, c02, c03, c04 FROM Objects ORDER BY id"
                                ).fetchall()
        except sqlite3.OperationalError:  # the run has created the file, not its table yet
            return []


def protocol_pids(project, protocol):
    """Ids of the pw_protocol_run processes running ``protocol`` (the shell and Python)."""
    listing = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    wanted = ("pw_protocol_run.py", str(project.getPath()), protocol.getDbPath())
    pids = []
    for line in listing.splitlines():
        pid, _, args = line.strip().partition(" ")
        if all(part in args for part in wanted):
            pids.append(int(pid))
    return pids


def kill(pids):
    """SIGKILL the processes of a protocol run and wait until they are gone."""
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    for pid in pids:  # reap the shell Scipion started from this process (no zombie left)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    gone = time.time() + 30  # and let the init process reap the orphaned Python process
    while any(psutil.pid_exists(pid) for pid in pids) and time.time() < gone:
        time.sleep(0.1)


def reload(project, protocol):
    """The protocol as the project sees it now (dead processes are marked failed)."""
    project.getRuns(refresh=True, checkPids=True)
    return project.getProtocol(protocol.getObjId())


def check_outputs(protocol, dataset):
    truth = pd.read_csv(dataset.truth_csv)
    names = sorted(name for name, _ in protocol.iterOutputAttributes())
    assert names == sorted(["outputParticles_%s" % j for j in JOBS]
                           + ["outputClasses_%s" % j for j in JOBS])
    for job in JOBS:
        particles = getattr(protocol, "outputParticles_%s" % job)
        classes = getattr(protocol, "outputClasses_%s" % job)
        assert particles.getSize() == N_PARTICLES
        assert classes.getSize() == truth["Class3D/%s" % job].nunique()
        sizes = sorted(cls.getSize() for cls in classes.iterItems())
        assert sizes == sorted(truth["Class3D/%s" % job].value_counts().tolist())


def test_killed_in_a_step_resumes_without_redoing_finished_steps(dataset):
    from pyworkflow.protocol.constants import MODE_RESUME

    project = new_project("resume_after_kill")
    prot = new_import(project, dataset)
    project.launchProtocol(prot)  # in the background, as the GUI does
    deadline = time.time() + 180
    while True:
        assert time.time() < deadline, "the second output step never started"
        current = steps(prot) if os.path.exists(prot.getStepsFile()) else []
        if len(current) == 4 and current[2][2] == "running":
            break
        time.sleep(0.05)
    kill(protocol_pids(project, prot))
    killed_at = time.time()
    before = steps(prot)
    assert [s[2] for s in before] == ["finished", "finished", "running", None]
    assert before[2][:2] == ("createOutputStep", '["job086"]')

    prot = reload(project, prot)
    assert prot.isFailed()
    assert "not found running" in prot.getErrorMessage()

    prot.runMode.set(MODE_RESUME)
    project.launchProtocol(prot, wait=True)
    prot = reload(project, prot)
    assert prot.isFinished(), prot.getErrorMessage()
    after = steps(prot)
    assert [s[:2] for s in after] == [s[:2] for s in before]  # the same four steps, once each
    assert [s[2] for s in after] == ["finished"] * 4
    assert after[:2] == before[:2]  # finished steps not redone: same start and end times
    started_again = time.mktime(time.strptime(after[2][3][:19], "%Y-%m-%d %H:%M:%S"))
    assert started_again >= int(killed_at)
    check_outputs(prot, dataset)


def test_failed_step_leaves_project_loadable_and_rerunnable(dataset):
    from pyworkflow.project import Manager
    from pyworkflow.protocol.constants import MODE_RESUME

    data_star = dataset.class_jobs["Class3D/job086"]
    backup = data_star.with_suffix(".star.orig")
    shutil.copy(data_star, backup)
    project = new_project("rerun_after_failure")
    prot = new_import(project, dataset)
    assert prot.validate() == []
    lines = backup.read_text().splitlines(keepends=True)
    try:
        # A truncated last row: the STAR reader must refuse it when the step runs.
        data_star.write_text("".join(lines[:-3]) + lines[-3].split()[0] + "\n")
        project.launchProtocol(prot, wait=True)
        prot = Manager().loadProject("rerun_after_failure").getProtocol(prot.getObjId())
        assert prot.isFailed()
        assert data_star.name in prot.getErrorMessage()
        assert [s[2] for s in steps(prot)] == ["finished", "finished", "failed", None]
        # Only the finished job's outputs are registered.
        assert sorted(n for n, _ in prot.iterOutputAttributes()) == \
            ["outputClasses_job085", "outputParticles_job085"]
    finally:
        shutil.move(backup, data_star)

    project = Manager().loadProject("rerun_after_failure")
    os.chdir(project.getPath())
    prot = project.getProtocol(prot.getObjId())
    first = steps(prot)[:2]
    prot.runMode.set(MODE_RESUME)
    project.launchProtocol(prot, wait=True)
    prot = reload(project, prot)
    assert prot.isFinished(), prot.getErrorMessage()
    assert steps(prot)[:2] == first
    check_outputs(prot, dataset)


def test_reciprocal_analysis_killed_while_writing_reruns_from_a_clean_results_folder(dataset):
    """Killed while its analysis step writes the results: the folder says it is incomplete,
    and the continued run starts it again from empty (a file left there is gone) and seals
    it with a manifest before registering the outputs."""
    from pyworkflow.protocol.constants import MODE_RESUME
    from scipion_reciprocal.formats.result_folder import JOURNAL, MANIFEST, folder_status
    from scipion_reciprocal.protocols import ProtReciprocalAnalysis
    from scipion_reciprocal.viewers import ReciprocalAnalysisViewer
    from scipion_reciprocal.workflows.wiring import connect_many

    project = new_project("reciprocal_rerun_after_kill")
    imported = new_import(project, dataset)
    project.launchProtocol(imported, wait=True)
    prot = project.newProtocol(ProtReciprocalAnalysis, minOverlap=1, minFraction=0.0,
                               registerSubsets=2)
    connect_many(prot.inputClassifications, imported, ["outputClasses_%s" % j for j in JOBS])
    project.launchProtocol(prot)  # in the background
    results = Path(prot._getExtraPath("results"))
    deadline = time.time() + 180
    while not (results / JOURNAL).exists() or len((results / JOURNAL).read_text().split()) < 3:
        assert time.time() < deadline, "the analysis never wrote its tables"
        assert not (results / MANIFEST).exists(), "finished before it could be killed"
        time.sleep(0.01)
    kill(protocol_pids(project, prot))
    status = folder_status(results)
    assert not status and "interrupted" in status.reason
    stale = results / "per_class" / "job099_class9.star"   # e.g. from an earlier try
    stale.parent.mkdir(exist_ok=True)
    stale.write_text("not of this run")

    prot = reload(project, prot)
    assert prot.isFailed()
    viewer = ReciprocalAnalysisViewer(project=project, protocol=prot)
    viewer.setProtocol(prot)  # builds the form, as the GUI does
    assert viewer.getParam("plot").label.get() == "Plot (results incomplete)"
    assert "incomplete, no manifest.json" in viewer.incompleteReason()
    message = viewer._showPlot()[0]
    assert "Its files are not shown: run the protocol again" in message._msg
    assert "incomplete" in viewer._getVisualizeDict()["text0"]()[0]._msg
    prot.runMode.set(MODE_RESUME)
    project.launchProtocol(prot, wait=True)
    prot = reload(project, prot)
    assert prot.isFinished(), prot.getErrorMessage()
    status = folder_status(results, verify=True)
    assert status.complete and not stale.exists()
    viewer = ReciprocalAnalysisViewer(project=project, protocol=prot)
    viewer.setProtocol(prot)
    assert viewer.incompleteReason() == "" and viewer._showPlot()[0].getFigure()
    present = sorted(p.relative_to(results).as_posix() for p in results.rglob("*")
                     if p.is_file() and p.name != MANIFEST)
    assert present == status.files
    truth = pd.read_csv(dataset.truth_csv)
    per_class = [f for f in status.files if f.startswith("per_class/")]
    assert len(per_class) == sum(truth["Class3D/%s" % j].nunique() for j in JOBS)
    assert prot.outputConsensus.getSize() > 0
