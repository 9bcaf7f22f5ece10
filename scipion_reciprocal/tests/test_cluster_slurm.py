"""Protocols through Scipion's queue system on a real SLURM (one node on localhost).

The shipped ``cluster/hosts.conf.slurm`` (with the test partition as its queue) is written to
the throw-away Scipion home's hosts.conf; protocols are marked "Use queue? = Yes" with a queue
and its parameters exactly as the form's queue dialog does, launched with
``project.launchProtocol`` and followed the way the GUI's refresh follows them
(``project.getRuns(refresh=True)``, which asks SLURM through CHECK_COMMAND).

The SLURM part skips, with the reason, where munge/slurmctld/slurmd are not installed or do not
start (scripts/test.sh installs them when it runs as root with apt-get).
"""
import os
import re
import shutil
import tempfile
import time
import unittest
from pathlib import Path

import numpy as np
import pandas as pd
import pyworkflow as pw
from pwem.protocols import ProtCreateStreamData
from pyworkflow.protocol.constants import STATUS_ABORTED, STATUS_FAILED, STATUS_FINISHED
from pyworkflow.protocol.hosts import HostConfig
from pyworkflow.tests import BaseTest, setupTestProject

from scipion_reciprocal import Plugin
from scipion_reciprocal.cluster import SLURM_HOSTS_CONF, example_queues, write_hosts_conf
from scipion_reciprocal.core.picking import read_history
from scipion_reciprocal.protocols import (ProtBackendCheck, ProtImportRelionClassifications,
                                          ProtReciprocalAnalysis, ProtTrainParticleClassifier)
from scipion_reciprocal.protocols.protocol_backend_check import BACKEND_NAMES
from scipion_reciprocal.simulate.dataset import build_demo_project
from scipion_reciprocal.tests.localslurm import PARTITION, LocalSlurm, SlurmStartError, unavailable
from scipion_reciprocal.workflows.wiring import connect, connect_many, relion_particles_import

N_PARTICLES = 60
QUEUE_PARAMS = {"JOB_MEMORY": "1G", "JOB_TIME": "00:20:00"}
JOB_TIMEOUT = 600  # seconds a queued protocol may take before the test gives up


class TestSlurmHostsConf(unittest.TestCase):
    """The shipped file, read by pyworkflow as Scipion reads a hosts.conf (no SLURM needed)."""

    def test_example_parses_and_fills_the_template(self):
        host = HostConfig.load(str(SLURM_HOSTS_CONF))["localhost"]
        queues = host.getQueueSystem()
        self.assertEqual(queues.getName(), "SLURM")
        self.assertEqual(sorted(queues.queues), ["cpu", "gpu"])
        self.assertEqual(host.getSubmitCommand() % {"JOB_SCRIPT": "x.job"}, "sbatch x.job")
        self.assertEqual(host.getCheckCommand() % {"JOB_ID": 42}, "squeue -h -j 42 -o %T")
        self.assertEqual(host.getCancelCommand() % {"JOB_ID": 42}, "scancel 42")
        self.assertEqual(host.getSubmitPrefix(), "scipion")
        done = host.getJobDoneRegex()
        for state, ended in (("CANCELLED", True), ("TIMEOUT", True), ("COMPLETED", True),
                             ("OUT_OF_MEMORY", True), ("COMPLETING", False), ("RUNNING", False),
                             ("PENDING", False)):
            self.assertEqual(bool(re.search(done, state + "\n")), ended, state)
        submit = dict(host.getQueuesDefault())
        submit.update({p[0]: p[1] for p in queues.queues["gpu"]})
        submit.update(JOB_NAME="12", JOB_QUEUE="gpu", JOB_NODES=1, JOB_THREADS=4, JOB_CORES=4,
                      GPU_COUNT=2, JOB_SCRIPT="Runs/x/logs/scipion12.job",
                      JOB_LOGS="Runs/x/logs/scipion12", JOB_NODEFILE="/p/x.nodefile",
                      JOB_COMMAND="python pw_protocol_run.py", SCIPION_PROJECT="p",
                      SCIPION_PROTOCOL="12-train")
        script = host.getSubmitTemplate() % submit
        lines = script.splitlines()
        self.assertEqual(lines[0], "#!/bin/bash")
        for option in ("--partition=gpu", "--cpus-per-task=4", "--ntasks=1", "--gres=gpu:2",
                       "--mem=64G", "--time=24:00:00", "--error=Runs/x/logs/scipion12.err"):
            self.assertIn("#SBATCH " + option, lines)
        self.assertEqual(lines[-1], "python pw_protocol_run.py")

    def test_written_config_has_the_given_partitions(self):
        target = Path(tempfile.mkdtemp(prefix="hosts-")) / "hosts.conf"
        write_hosts_conf(target, {"short": {"JOB_TIME": "01:00:00"}, "a100": {"JOB_MEMORY": "96G"}})
        queues = HostConfig.load(str(target))["localhost"].getQueueSystem().queues
        self.assertEqual(list(queues), ["short", "a100"])
        self.assertEqual(dict((p[0], p[1]) for p in queues["short"]),
                         {"JOB_MEMORY": "16G", "JOB_TIME": "01:00:00"})
        self.assertEqual(dict((p[0], p[1]) for p in queues["a100"]),
                         {"JOB_MEMORY": "96G", "JOB_TIME": "04:00:00"})
        self.assertEqual([p[2] for p in queues["a100"]], [p[2] for p in example_queues()["cpu"]])
        with self.assertRaises(FileExistsError):
            write_hosts_conf(target, {"other": {}})
        write_hosts_conf(target, {"other": {}}, force=True)
        self.assertIn('"short"', Path(str(target) + ".bak").read_text())
        with self.assertRaises(ValueError):
            write_hosts_conf(target, {"two words": {}}, force=True)


    def test_command_writes_the_scipion_hosts_conf(self):
        from scipion_reciprocal.cli import main
        target = Path(tempfile.mkdtemp(prefix="hosts-")) / "hosts.conf"
        self.assertEqual(main(["hosts-conf", "--queue", "short", "--queue", "long",
                               "--time", "2-00:00:00", "-o", str(target)]), 0)
        queues = HostConfig.load(str(target))["localhost"].getQueueSystem().queues
        self.assertEqual({name: dict((p[0], p[1]) for p in params)
                          for name, params in queues.items()},
                         {"short": {"JOB_MEMORY": "16G", "JOB_TIME": "2-00:00:00"},
                          "long": {"JOB_MEMORY": "16G", "JOB_TIME": "2-00:00:00"}})
        self.assertEqual(main(["hosts-conf", "--queue", "x", "-o", str(target)]), 1)
        self.assertEqual(main(["hosts-conf", "--memory", "4G"]), 2)


class TestSlurmQueue(BaseTest):
    """Reciprocal analysis, classifier training and a cancelled job, submitted with sbatch."""

    @classmethod
    def setUpClass(cls):
        cls.skipReason = unavailable()
        if cls.skipReason:
            return
        try:
            cls.slurm = LocalSlurm.start(tempfile.mkdtemp(prefix="scipion-slurm-"))
        except (SlurmStartError, OSError, TimeoutError) as exc:
            cls.skipReason = "local SLURM did not start: %s" % exc
            return
        cls._previousEnv = {k: os.environ.get(k) for k in cls.slurm.environ}
        os.environ.update(cls.slurm.environ)  # sbatch/squeue/scancel run from this process
        # The throw-away home's hosts.conf (SCIPION_HOSTS), read when the project is created.
        cls.hostsFile = Path(pw.Config.SCIPION_HOSTS)
        cls._previousHosts = cls.hostsFile.read_text() if cls.hostsFile.exists() else None
        try:
            cls._setUpProject()
        except BaseException:
            cls.tearDownClass()  # stop the daemons and put the hosts.conf back
            raise

    @classmethod
    def _setUpProject(cls):
        assert Path(pw.Config.SCIPION_HOME).resolve() in cls.hostsFile.resolve().parents, \
            "%s is not in the Scipion home of the tests" % cls.hostsFile
        write_hosts_conf(cls.hostsFile, {PARTITION: QUEUE_PARAMS}, force=True)
        setupTestProject(cls)
        cls._dataFolder = tempfile.mkdtemp(prefix="reciprocal-slurm-")
        relion = Path(cls._dataFolder) / "relion"
        cls.dataset = build_demo_project(relion, seed=11, n_particles=N_PARTICLES, n_micrographs=4)
        cls.imported = cls.newProtocol(ProtImportRelionClassifications, relionDir=str(relion),
                                       jobs="85,86")
        cls.launchProtocol(cls.imported)  # imports run locally; the analyses go to the queue

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "slurm", None) is None:
            return
        cls.slurm.stop()
        if not os.environ.get("SCIPION_RECIPROCAL_KEEP_TEST_HOME"):
            for folder in (cls.slurm.folder, getattr(cls, "_dataFolder", None)):
                if folder:
                    shutil.rmtree(folder, ignore_errors=True)
        cls.slurm = None
        for key, value in cls._previousEnv.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if cls._previousHosts is not None:
            cls.hostsFile.write_text(cls._previousHosts)

    def setUp(self):
        if self.skipReason:
            self.skipTest(self.skipReason)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _useQueue(prot, **params):
        """What 'Use queue? = Yes' and the queue dialog store in the protocol."""
        prot._useQueue.set(True)
        values = dict(QUEUE_PARAMS, **params)
        prot.setQueueParams((PARTITION, values))

    def _submit(self, prot):
        host = self.proj.getHostConfig(prot.getHostName())
        self.assertEqual(host.getQueueSystem().getName(), "SLURM")  # the home's hosts.conf
        self.assertEqual(list(host.getQueueSystem().queues), [PARTITION])
        self.proj.launchProtocol(prot)  # as the form's Execute: returns once sbatch answered
        self.assertTrue(prot.useQueueForProtocol())
        self.assertEqual(len(prot.getJobIds()), 1, prot.getErrorMessage())
        jobId = int(prot.getJobIds()[0])
        self.assertGreater(jobId, 0)
        return jobId

    def _refresh(self, prot):
        """The protocol as the GUI's refresh sees it (run.db, then SLURM for active runs)."""
        runs = {r.getObjId(): r for r in self.proj.getRuns(refresh=True)}
        return runs[prot.getObjId()]

    def _waitUntil(self, prot, condition, what, jobId):
        deadline = time.time() + JOB_TIMEOUT
        while True:
            run = self._refresh(prot)
            if condition(run):
                return run
            if time.time() > deadline:
                self.fail("%s: not %s after %d s (status %s, SLURM job %d %s)\n%s"
                          % (run.getRunName(), what, JOB_TIMEOUT, run.getStatus(), jobId,
                             self.slurm.job_state(jobId), self._logs(run)))
            time.sleep(1)

    def _waitForEnd(self, prot, jobId):
        return self._waitUntil(prot, lambda r: not r.isActive(), "ended", jobId)

    @staticmethod
    def _jobFiles(run):
        base = Path(run.getProject().path) / run._getLogsPath("scipion%s" % run.strId())
        return {ext: Path(str(base) + ext) for ext in (".job", ".out", ".err")}

    def _logs(self, run):
        files = list(self._jobFiles(run).values()) + [Path(run.getProject().path, p)
                                                      for p in run.getLogPaths()[:2]]
        return "\n".join("--- %s\n%s" % (f.name, f.read_text(errors="replace")[-3000:])
                         for f in files if f.exists())

    def _assertFinishedThroughSlurm(self, run, jobId, options):
        self.assertEqual(run.getStatus(), STATUS_FINISHED, self._logs(run))
        self.assertEqual(self.slurm.final_state(jobId), "COMPLETED")
        files = self._jobFiles(run)
        script = files[".job"].read_text().splitlines()
        for option in options:
            self.assertIn("#SBATCH " + option, script)
        self.assertIn("SLURM job %d on " % jobId, files[".out"].read_text())
        stdout = Path(run.getProject().path, run.getStdoutLog()).read_text()
        self.assertIn("Executing through the queue system", stdout)
        # The project keeps the job id (the run itself is not told it: pyworkflow logs "JOBID: []").
        self.assertEqual([int(j) for j in run.getJobIds()], [jobId])
        return files

    # ------------------------------------------------------------------ tests
    def test_reciprocal_analysis_runs_on_slurm(self):
        prot = self.newProtocol(ProtReciprocalAnalysis, minOverlap=3, minFraction=0.05,
                                minGroupSize=3, registerSubsets=0)
        connect_many(prot.inputClassifications, self.imported,
                     ["outputClasses_job085", "outputClasses_job086"])
        self._useQueue(prot)
        jobId = self._submit(prot)
        run = self._waitForEnd(prot, jobId)
        self._assertFinishedThroughSlurm(run, jobId, [
            "--partition=%s" % PARTITION, "--mem=1G", "--time=00:20:00", "--gres=gpu:0",
            "--cpus-per-task=2", "--ntasks=1"])
        # The registered outputs are the analysis of the simulated labels.
        a = self.dataset.labels["Class3D/job085"]
        b = self.dataset.labels["Class3D/job086"]
        run = self.proj.getProtocol(run.getObjId())
        groups = pd.read_csv(run._getExtraPath("results", "consensus_groups.csv"))
        kept = groups[groups.kept.astype(bool)]
        consensus = run.outputConsensus
        self.assertEqual(consensus.getSize(), len(kept))
        self.assertGreater(len(kept), 0)
        for group in kept.itertuples():
            expected = int(np.sum((a == group.class_job085) & (b == group.class_job086)))
            self.assertEqual(consensus[int(group.group)].getSize(), expected)
        self.assertEqual(consensus.getImages().getSize(), N_PARTICLES)
        counts = pd.read_csv(run._getExtraPath("results", "counts_matrix.csv"))
        forward = counts[(counts.job1 == 85) & (counts.job2 == 86)]
        self.assertEqual(int(forward.value.sum()), N_PARTICLES)

    def test_classifier_training_runs_on_slurm_with_a_gpu(self):
        missing = Plugin.validateBackend("classifier")
        if missing:
            self.skipTest(missing[0])
        good = relion_particles_import(self.proj, self.dataset.good_star, 4.0)
        bad = relion_particles_import(self.proj, self.dataset.bad_star, 4.0)
        self.launchProtocol(good)
        self.launchProtocol(bad)
        prot = self.newProtocol(ProtTrainParticleClassifier, box=32, epochs=3, patience=3)
        connect(prot.goodParticles, good, "outputParticles")
        connect(prot.badParticles, bad, "outputParticles")
        self._useQueue(prot, JOB_MEMORY="2G")
        self.assertEqual(prot.getGpuList(), [0])
        jobId = self._submit(prot)
        run = self._waitForEnd(prot, jobId)
        files = self._assertFinishedThroughSlurm(run, jobId, [
            "--partition=%s" % PARTITION, "--mem=2G", "--gres=gpu:1", "--cpus-per-task=2"])
        # SLURM gave the job one of the node's GPUs (a fake device on this test node).
        self.assertIn("GPUs '0'", files[".out"].read_text())
        run = self.proj.getProtocol(run.getObjId())
        model = run.outputModel
        self.assertEqual(model.getBox(), 32)
        self.assertAlmostEqual(model.getPixelSize(), 4.0)
        self.assertTrue(os.path.isfile(model.getModelFile()))
        self.assertTrue(0.0 <= model.getTestAuc() <= 1.0)
        history = read_history(model.getModelFile())
        self.assertEqual(list(history.epoch), list(range(1, len(history) + 1)))
        self.assertLessEqual(len(history), 3)

    def test_backend_sees_the_gpus_the_queue_assigns(self):
        """The form asks for GPU 1 of the submitting machine; through the queue the job asks
        SLURM for one GPU, and the backend sees the GPUs Scipion hands the step there:
        renumbered from 0, as SLURM's device constraint exposes them."""
        name = next((n for n in BACKEND_NAMES if not Plugin.validateBackend(n)), None)
        if name is None:
            self.skipTest("no backend environment installed")
        prot = self.newProtocol(ProtBackendCheck, backend=BACKEND_NAMES.index(name), gpuList="1")
        self._useQueue(prot, JOB_MEMORY="2G")
        jobId = self._submit(prot)
        run = self._waitForEnd(prot, jobId)
        self._assertFinishedThroughSlurm(run, jobId, ["--gres=gpu:1", "--ntasks=1"])
        run = self.proj.getProtocol(run.getObjId())
        self.assertTrue(run.summaryVar.get().endswith("(CUDA_VISIBLE_DEVICES=0)"),
                        run.summaryVar.get())
        stdout = Path(run.getProject().path, run.getStdoutLog()).read_text()
        self.assertIn("&& CUDA_VISIBLE_DEVICES=0 python -c", stdout)

    def _submitSleeper(self, label):
        """Submit a protocol that sleeps 10 minutes in its first step; return once it runs."""
        prot = self.newProtocol(ProtCreateStreamData, setof=2, nDim=1, xDim=64, yDim=64,
                                creationInterval=1, delay=600)
        prot.setObjLabel(label)
        self._useQueue(prot)
        jobId = self._submit(prot)
        self._waitUntil(prot, lambda r: r.isRunning(), "running", jobId)
        return prot, jobId

    def test_job_cancelled_by_slurm_fails_with_the_reason(self):
        prot, jobId = self._submitSleeper("cancelled by SLURM")
        self.assertEqual(self.slurm.job_state(jobId), "RUNNING")
        self.slurm.cancel(jobId)
        run = self._waitForEnd(prot, jobId)
        self.assertEqual(run.getStatus(), STATUS_FAILED)
        self.assertIn("JOB ID %d not found running on the queue engine" % jobId,
                      run.getErrorMessage())
        self.assertEqual(self.slurm.final_state(jobId), "CANCELLED")
        # SLURM's own reason, in the job's error log next to the protocol's logs.
        self.assertRegex(self._jobFiles(run)[".err"].read_text(),
                         r"\*\*\* JOB %d ON \S+ CANCELLED AT " % jobId)
        self.assertEqual(len(list(run.iterOutputAttributes())), 0)
        # The project still loads, with the run failed.
        self.assertEqual(self.proj.getProtocol(run.getObjId()).getStatus(), STATUS_FAILED)

    def test_stop_in_the_project_cancels_the_slurm_job(self):
        prot, jobId = self._submitSleeper("stopped by the user")
        self.proj.stopProtocol(self._refresh(prot))  # the GUI's Stop: runs CANCEL_COMMAND
        self.assertEqual(self.slurm.final_state(jobId), "CANCELLED")
        run = self._refresh(prot)
        self.assertEqual(run.getStatus(), STATUS_ABORTED)
        self.assertRegex(self._jobFiles(run)[".err"].read_text(),
                         r"\*\*\* JOB %d ON \S+ CANCELLED AT " % jobId)
