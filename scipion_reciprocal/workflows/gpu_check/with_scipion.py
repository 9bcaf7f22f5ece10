"""The GPU check through Scipion: a project like the demo's, every step a protocol.

The data are imported with Scipion's import protocols, RECOVAR and the classifier run as the
plugin's protocols on the GPU (the form's default GPU list, "0"), and the figures are read
from the outputs the protocols registered. Each protocol is launched as from the project
window and stopped (as with its Stop button) when it runs past its phase's limit.
"""
import os
import shlex
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ... import scipion_setup
from ...environments import backend_command, clean_environ
from . import figures, plan as plans
from .datasets import simulate_classifier_data, simulate_recovar_data
from .driver import CheckDriver
from .recovar_commands import BUILD_KERNEL, cuda_arch_flags
from .runner import PhaseFailed, PhaseTimeout, tail

PROJECT = "gpu_check"
PHASES = [plans.GPU, plans.BACKENDS, plans.SIMULATE_RECOVAR, plans.SIMULATE_CLASSIFIER,
          plans.SCIPION_IMPORT, plans.KERNEL, plans.PIPELINE, plans.ANALYZE, plans.TRAIN,
          plans.CLASSIFY, plans.PICK]
POLL_SECONDS = 1.0


class ScipionCheck(CheckDriver):
    """The phases of the check through Scipion (see the module docstring)."""

    setting, phases = "scipion", PHASES
    protocol_phases = (plans.BACKENDS, plans.SCIPION_IMPORT, plans.PIPELINE, plans.ANALYZE,
                       plans.TRAIN, plans.CLASSIFY, plans.PICK)

    def __init__(self, plan, out_dir, allow_cpu=False, processes=1, install_seconds=None,
                 log=print):
        super().__init__(plan, out_dir, allow_cpu, processes, log)
        self.threads = max(1, min(8, os.cpu_count() or 1))
        # Read by the backend programs the protocols start (they inherit this environment).
        os.environ.update(XLA_PYTHON_CLIENT_PREALLOCATE="false", TF_FORCE_GPU_ALLOW_GROWTH="true",
                          RECOVAR_CUDA_CACHE_DIR=str(self.out / "recovar-cuda"))
        if install_seconds is not None:
            self.run.report["install_s"] = install_seconds
            self.run.note("Installing the environments took %.0f s (outside the %.0f s budget)."
                          % (install_seconds, plan.budget))
        self.project = self.classifier_data = None
        self.prots = {}
        self.ready = {"recovar": False, "classifier": False}   # set by the backend check

    def main(self):
        run = self.run
        run.run(plans.GPU, self.gpu_phase)
        self.project = self._new_project()
        run.run(plans.BACKENDS, self.backends_phase)
        simulated = [run.run(plans.SIMULATE_RECOVAR, self.simulate_recovar_phase),
                     run.run(plans.SIMULATE_CLASSIFIER, self.simulate_classifier_phase)]
        if None in simulated or run.run(plans.SCIPION_IMPORT, self.import_phase) is None:
            self._skip_rest("no imported data")
            return run.finish()
        if not self.ready["recovar"]:
            self._skip_rest("the recovar environment cannot run here (%s)" % plans.BACKENDS,
                            (plans.KERNEL, plans.PIPELINE, plans.ANALYZE))
        else:
            self.run_kernel_phase()
            if run.run(plans.PIPELINE, self.pipeline_phase) is not None:
                run.run(plans.ANALYZE, self.analyze_phase)
            else:
                run.skip(plans.ANALYZE, "no pipeline result")
        if not self.ready["classifier"]:
            self._skip_rest("the classifier environment cannot run here (%s)" % plans.BACKENDS)
        elif run.run(plans.TRAIN, self.train_phase) is not None:
            run.run(plans.CLASSIFY, self.classify_phase)
            run.run(plans.PICK, self.pick_phase)
        else:
            self._skip_rest("no trained model")
        run.report["scipion_project"] = str(self.project.getPath())
        return run.finish()

    def _skip_rest(self, reason, names=None):
        """Skip the given phases (default: every phase not reported yet)."""
        done = {p["name"] for p in self.run.report["phases"]}
        for name in names or self.phases:
            if name not in done:
                self.run.skip(name, reason)

    def disable_cuda_kernel(self):
        os.environ["RECOVAR_DISABLE_CUDA"] = "1"   # inherited by the protocols' processes

    # ------------------------------------------------------------------ set-up phases
    def backends_phase(self, limit):
        """Each backend's self-check through 'check backend environment': it must see a GPU.
        A backend that cannot run fails the phase; the other one's phases still run."""
        from ... import Plugin
        from ...protocols import ProtBackendCheck
        from ...protocols.protocol_backend_check import BACKEND_NAMES

        end = time.monotonic() + limit
        found, problems = {}, []
        for name in self.ready:
            errors = Plugin.validateBackend(name)
            if errors:
                problems += errors
                continue
            prot = self._launch(self.project.newProtocol(
                ProtBackendCheck, backend=BACKEND_NAMES.index(name)),
                "check %s environment" % name, end)
            report = found[name] = prot._readReport()
            gpu = [d for d in report["devices"] if "gpu" in d.lower() or "cuda" in d.lower()]
            if self.gpus and not gpu:
                problems.append(
                    "the %s environment sees no GPU (devices: %s): it is a CPU build; reinstall "
                    "it with: scipion-reciprocal install-backend %s --cuda --force"
                    % (name, ", ".join(report["devices"]), name))
                continue
            self.ready[name] = True
        self.run.report["machine"]["backends"] = found
        if problems:
            raise PhaseFailed("; ".join(problems))
        found["message"] = "; ".join("%s: %s" % (n, ", ".join(r["devices"])) for n, r in found.items())
        return found

    def simulate_recovar_phase(self, limit):
        self.recovar_data = simulate_recovar_data(self.out / "data" / "recovar", self.plan,
                                                  self.processes)
        data = self.recovar_data
        return {"message": "%d particles of %d px in %d states"
                           % (len(data.states), data.box, len(data.maps))}

    def simulate_classifier_phase(self, limit):
        self.classifier_data = simulate_classifier_data(self.out / "data" / "classifier",
                                                        self.plan, self.processes)
        data = self.classifier_data
        return {"message": "%d training boxes of %d px; %d picking micrographs of %d px with "
                           "%d particles" % (data.n_training, data.box, self.plan.picking_micrographs,
                                             self.plan.micrograph_size, len(data.truth))}

    def import_phase(self, limit):
        from pwem.protocols import ProtImportMicrographs
        from ..wiring import relion_particles_import

        end = time.monotonic() + limit
        recovar, classifier = self.recovar_data, self.classifier_data
        for label, star, pixel in (
                ("particles", recovar.particles_star, recovar.pixel_size),
                ("good particles", classifier.good_star, classifier.pixel_size),
                ("bad particles", classifier.bad_star, classifier.pixel_size),
                ("held-out boxes", classifier.held_out_star, classifier.pixel_size)):
            self.prots[label] = self._launch(relion_particles_import(self.project, star, pixel),
                                             "import %s" % label, end)
        self.prots["micrographs"] = self._launch(self.project.newProtocol(
            ProtImportMicrographs, filesPath=str(classifier.micrograph_folder),
            filesPattern="*.mrc", samplingRate=classifier.pixel_size, voltage=300.0,
            sphericalAberration=2.7, amplitudeContrast=0.1), "import micrographs", end)
        sizes = {label: self._particles(prot).getSize() for label, prot in self.prots.items()
                 if label != "micrographs"}
        sizes["micrographs"] = self.prots["micrographs"].outputMicrographs.getSize()
        expected = len(recovar.states)
        if sizes["particles"] != expected:
            raise PhaseFailed("imported %d particles of %d" % (sizes["particles"], expected))
        sizes["message"] = ", ".join("%s %d" % kv for kv in sizes.items())
        return sizes

    def kernel_phase(self, limit):
        from ... import Plugin
        env = clean_environ(dict(os.environ, CUDA_ARCH=cuda_arch_flags(self.gpus)))
        command = backend_command(Plugin.getActivation("recovar"),
                                  "-c %s" % shlex.quote(BUILD_KERNEL), "0")
        log = self.out / "logs" / "recovar-cuda-kernel.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as handle:
            try:
                done = subprocess.run(["bash", "-c", command], stdout=handle,
                                      stderr=subprocess.STDOUT, env=env, timeout=limit)
            except subprocess.TimeoutExpired:
                raise PhaseTimeout("stopped at its limit of %.0f s; log: %s" % (limit, log))
        if done.returncode:
            raise PhaseFailed("the build failed; last lines of %s:\n%s" % (log, tail(log)))
        return {"message": "built for %s" % env["CUDA_ARCH"]}

    # ------------------------------------------------------------------ RECOVAR phases
    def pipeline_phase(self, limit):
        from ...protocols import ProtRecovarPipeline
        from ...protocols.protocol_recovar_pipeline import MASK_CHOICES, UNINVERT_CHOICES
        from ..wiring import connect

        options = self.options
        prot = self.project.newProtocol(
            ProtRecovarPipeline, maskType=MASK_CHOICES.index(options.mask),
            uninvertData=UNINVERT_CHOICES.index(options.uninvert), zdims=str(options.zdim),
            downsample=options.downsample)
        connect(prot.inputParticles, self.prots["particles"], "outputParticles")
        prot = self.prots["pipeline"] = self._launch(prot, "recovar pipeline",
                                                     time.monotonic() + limit)
        return self.record_mean(prot.outputMean.getFileName(), prot.pipelineDir())

    def analyze_phase(self, limit):
        from ...convert.set_tables import read_class_items
        from ...protocols import ProtRecovarAnalyze

        options = self.options
        prot = self.project.newProtocol(
            ProtRecovarAnalyze, zdim=options.zdim, nClusters=options.n_clusters,
            computeCenters=options.compute_centers, umap=options.umap,
            nTrajectories=options.trajectories)
        prot.inputPipeline.set(self.prots["pipeline"])
        prot = self._launch(prot, "recovar analyze", time.monotonic() + limit)
        members = read_class_items(prot.outputClasses.getFileName(), ["_index"])
        states = self.recovar_data.states[members["_index"].to_numpy(np.int64) - 1]
        return self.record_kmeans(members["classId"].to_numpy(), states)

    # ------------------------------------------------------------------ classifier phases
    def train_phase(self, limit):
        from ...core.picking import read_test_report
        from ...protocols import ProtTrainParticleClassifier
        from ..wiring import connect

        prot = self.project.newProtocol(ProtTrainParticleClassifier, box=self.plan.classifier_box,
                                        epochs=self.plan.epochs, patience=self.plan.patience,
                                        numberOfThreads=self.threads)
        connect(prot.goodParticles, self.prots["good particles"], "outputParticles")
        connect(prot.badParticles, self.prots["bad particles"], "outputParticles")
        prot = self.prots["train"] = self._launch(prot, "train particle classifier",
                                                  time.monotonic() + limit)
        report = read_test_report(prot.outputModel.getModelFile())
        for key in ("precision", "recall", "roc_auc"):
            self.run.figure("classifier_test_split_%s" % key, report.get(key))
        return {"message": "held-out 15%% split: precision %s, recall %s" % (
            _fmt(report.get("precision")), _fmt(report.get("recall"))), "report": report}

    def classify_phase(self, limit):
        from ...convert.set_tables import read_set_items
        from ...protocols import ProtClassifyParticles
        from ..wiring import connect

        prot = self.project.newProtocol(ProtClassifyParticles, numberOfThreads=self.threads)
        connect(prot.inputParticles, self.prots["held-out boxes"], "outputParticles")
        connect(prot.inputModel, self.prots["train"], "outputModel")
        prot = self._launch(prot, "classify particles", time.monotonic() + limit)
        boxes = read_set_items(self._particles(self.prots["held-out boxes"]).getFileName(),
                               ["_index"])
        good = set(read_set_items(prot.outputGood.getFileName(), ["_index"])["_index"].tolist())
        index = boxes["_index"].to_numpy()
        found = figures.precision_recall(np.isin(index, list(good)),
                                         index <= self.classifier_data.n_held_out_good)
        for key in ("precision", "recall"):
            self.run.figure("classifier_held_out_%s" % key, found[key])
        found["message"] = "%d held-out boxes: precision %s, recall %s" % (
            found["n"], _fmt(found["precision"]), _fmt(found["recall"]))
        return found

    def pick_phase(self, limit):
        from ...convert.set_tables import read_set_items
        from ...protocols import ProtPickMicrographs
        from ..wiring import connect

        mics = self.prots["micrographs"]
        prot = self.project.newProtocol(ProtPickMicrographs, numberOfThreads=self.threads)
        connect(prot.inputMicrographs, mics, "outputMicrographs")
        connect(prot.inputModel, self.prots["train"], "outputModel")
        prot = self._launch(prot, "pick micrographs", time.monotonic() + limit)
        files = read_set_items(mics.outputMicrographs.getFileName(), ["_filename"])
        names = dict(zip(files["id"], (Path(f).name for f in files["_filename"])))
        coords = read_set_items(prot.outputCoordinates.getFileName(), ["_micId", "_x", "_y"])
        picks = pd.DataFrame({"micrograph": [names[m] for m in coords["_micId"]],
                              "x": coords["_x"], "y": coords["_y"]})
        found = figures.pick_figures(picks, self.classifier_data.truth, self.plan.classifier_box)
        for key in ("precision", "recall", "f1"):
            self.run.figure("picks_%s" % key, found[key])
        found["message"] = "%d picks for %d particles: precision %s, recall %s" % (
            found["n_picks"], found["n_true"], _fmt(found["precision"]), _fmt(found["recall"]))
        return found

    # ------------------------------------------------------------------ Scipion helpers
    def _new_project(self):
        scipion_setup.configure()
        from pyworkflow.project import Manager
        manager = Manager()
        if manager.hasProject(PROJECT):
            manager.deleteProject(PROJECT)
        project = manager.createProject(PROJECT)
        os.chdir(project.getPath())
        self.log("Scipion project %s in %s" % (PROJECT, project.getPath()))
        return project

    def _launch(self, protocol, label, end):
        """Launch ``protocol`` and wait until it ends or ``end`` (monotonic) passes, then
        stop it as the project window's Stop button does. The finished run is returned."""
        protocol.setObjLabel(label)
        self.log("  launching '%s'" % label)
        self.project.launchProtocol(protocol)
        while True:
            run = self._refresh(protocol)
            if not run.isActive():
                break
            if time.monotonic() > end:
                self.project.stopProtocol(run)
                raise PhaseTimeout("'%s' stopped at the phase's limit; log: %s"
                                   % (label, run.getStdoutLog()))
            time.sleep(POLL_SECONDS)
        if not run.isFinished():
            raise PhaseFailed("'%s' %s: %s\n%s" % (label, run.getStatus(), run.getErrorMessage(),
                                                  tail(run.getStdoutLog())))
        return run

    def _refresh(self, protocol):
        runs = {r.getObjId(): r for r in self.project.getRuns(refresh=True)}
        return runs[protocol.getObjId()]

    @staticmethod
    def _particles(prot):
        """An import's particles (a RELION import also registers their micrographs)."""
        return prot.outputParticles


def _fmt(value):
    return "n/a" if value is None else "%.3f" % value
