"""The GPU check without Scipion: RECOVAR on the machine's own JAX (``gpu-check.sh --wheels``).

For a GPU machine without network access that has JAX with CUDA but neither Scipion nor
RECOVAR. The plugin's simulator and conversion code write the inputs (``formats.cryodrgn``
from a RELION STAR file, as the protocols do from a Scipion set) and RECOVAR runs the same
commands the protocols run (:mod:`.recovar_commands`; a test compares them with the
protocols'). The Scipion layer itself (projects, imports, protocols)
is not exercised here, and the classifier is skipped when TensorFlow is missing.
"""
import json
import os
import subprocess

import numpy as np

from ...formats import cryodrgn
from ...formats import recovar_results as rr
from ...formats.relion import merge_optics
from ...formats.star import read_particles_star
from . import plan as plans
from .datasets import simulate_recovar_data
from .driver import CheckDriver
from .recovar_commands import (BUILD_KERNEL, PROBE, analyze_command, cuda_arch_flags,
                               pipeline_command)
from .runner import PhaseFailed, run_command
from .wheels import LEFT_OUT, normalized

PHASES = [plans.GPU, plans.IMPORTS, plans.KERNEL, plans.SIMULATE_RECOVAR, plans.CONVERT,
          plans.PIPELINE, plans.ANALYZE]
SCIPION_NOTE = (
    "Offline setting: the Scipion layer (project, imports, protocols, registered outputs) is "
    "not exercised. Scipion cannot be installed here: its pins (numpy 1.26.1, matplotlib "
    "3.8.1, scipy 1.11.2 on Python 3.12) need an environment of their own beside this "
    "machine's JAX, about 190 MB of wheels (121 MB without PyQt5) against 64 MB per transfer; "
    "pyperclip 1.9.0 has no wheel, and Scipion needs tkinter. The RECOVAR commands are the "
    "ones the protocols run, on inputs written by the plugin's conversion code.")

class OfflineCheck(CheckDriver):
    """The phases of the offline check (see the module docstring)."""

    setting, phases = "offline", PHASES

    def __init__(self, plan, out_dir, python, site, allow_cpu=False, processes=1, log=print):
        super().__init__(plan, out_dir, allow_cpu, processes, log)
        self.python, self.site = str(python), site
        self.env = self._recovar_environment()
        self.inputs = None

    def _recovar_environment(self):
        env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false",
                   RECOVAR_CUDA_CACHE_DIR=str(self.out / "recovar-cuda"))
        env.pop("PYTHONPATH", None)
        if self.site:
            env["PYTHONPATH"] = str(self.site)
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = "0"      # the protocols' default GPU list
        else:
            env.update(CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
        return env

    def main(self):
        run = self.run
        run.note(SCIPION_NOTE)
        run.run(plans.GPU, self.gpu_phase)
        probe = run.run(plans.IMPORTS, self.imports_phase)
        self.run_kernel_phase()
        if run.run(plans.SIMULATE_RECOVAR, self.simulate_phase) is None \
                or run.run(plans.CONVERT, self.convert_phase) is None:
            run.skip(plans.PIPELINE, "no input data")
        elif probe is None:
            run.skip(plans.PIPELINE, "RECOVAR does not import here (see %s)" % plans.IMPORTS)
        elif run.run(plans.PIPELINE, self.pipeline_phase) is not None:
            run.run(plans.ANALYZE, self.analyze_phase)
        if not any(p["name"] == plans.ANALYZE for p in run.report["phases"]):
            run.skip(plans.ANALYZE, "no pipeline result")
        self._classifier()
        return run.finish()

    def disable_cuda_kernel(self):
        self.env["RECOVAR_DISABLE_CUDA"] = "1"

    # ------------------------------------------------------------------ phases
    def imports_phase(self, limit):
        log = self.out / "logs" / "recovar-probe.log"
        run_command([self.python, "-c", PROBE], limit, log, env=self.env)
        probe = json.loads(log.read_text().strip().splitlines()[-1])
        self.run.report["machine"]["recovar_environment"] = probe
        if probe["import_errors"]:
            raise PhaseFailed("; ".join("%s: %s" % kv for kv in probe["import_errors"].items()))
        if self.gpus and not any("cuda" in d.lower() or "gpu" in d.lower() for d in probe["devices"]):
            raise PhaseFailed("JAX sees no GPU here (devices: %s)" % ", ".join(probe["devices"]))
        left_out = {normalized(r.split("==")[0]) for r in LEFT_OUT}
        unexpected = [m for m in probe["missing"]
                      if normalized(m.split(";")[0].split("=")[0].split("<")[0].split(">")[0]
                                    .strip()) not in left_out]
        probe["message"] = "jax %s on %s; %d requirement(s) of recovar differ: %s%s" % (
            probe["versions"].get("jax"), ", ".join(probe["devices"]), len(probe["mismatches"]),
            "; ".join(probe["mismatches"]) or "none",
            "; missing beyond those left out: %s" % ", ".join(unexpected) if unexpected else "")
        return probe

    def kernel_phase(self, limit):
        env = dict(self.env, CUDA_ARCH=cuda_arch_flags(self.gpus))
        log = self.out / "logs" / "recovar-cuda-kernel.log"
        run_command([self.python, "-c", BUILD_KERNEL], limit, log, env=env)
        built = json.loads(log.read_text().strip().splitlines()[-1])
        built["message"] = "built for %s: %s" % (env["CUDA_ARCH"], built["library"])
        return built

    def simulate_phase(self, limit):
        data = self.recovar_data = simulate_recovar_data(self.out / "data" / "recovar",
                                                         self.plan, self.processes)
        return {"particles": len(data.states), "box": data.box,
                "message": "%d particles of %d px in %d states" % (
                    len(data.states), data.box, len(data.maps))}

    def convert_phase(self, limit):
        data = self.recovar_data
        table = read_particles_star(data.particles_star)
        rows = merge_optics(table.particles, table.optics)
        self.inputs = cryodrgn.write_recovar_inputs(
            rows, self.out / "recovar" / "inputs", data.pixel_size, data.box,
            ids=np.arange(1, len(rows) + 1), image_root=data.project_dir)
        return {"message": "RECOVAR inputs for %d particles" % self.inputs.n_particles}

    def pipeline_phase(self, limit):
        folder = self.out / "recovar" / "pipeline"
        command = pipeline_command(self.inputs.particles.parent, folder, self.options,
                                   cpu=not self.gpus)
        run_command([self.python] + command, limit, self.out / "logs" / "pipeline.log",
                    env=self.env, cwd=self.out)
        rr.check_job(folder, "pipeline")
        return self.record_mean(rr.pipeline_volumes(folder).mean, folder)

    def analyze_phase(self, limit):
        pipeline, folder = self.out / "recovar" / "pipeline", self.out / "recovar" / "analysis"
        run_command([self.python] + analyze_command(pipeline, folder, self.options), limit,
                    self.out / "logs" / "analyze.log", env=self.env, cwd=self.out)
        rr.check_job(folder, "analyze")
        kmeans = rr.read_kmeans(folder, n_rows=self.inputs.n_particles)
        return self.record_kmeans(kmeans.labels, self.recovar_data.states)

    def _classifier(self):
        probe = subprocess.run([self.python, "-c", "import tensorflow"], env=self.env,
                               capture_output=True, text=True)
        reason = ("TensorFlow is not installed here: the particle classifier (train, classify, "
                  "pick) is checked only in the setting with network access")
        if probe.returncode == 0:
            reason = ("the offline setting checks RECOVAR only; the classifier runs through its "
                      "protocols in the setting with network access")
        for name in (plans.TRAIN, plans.CLASSIFY, plans.PICK):
            self.run.skip(name, reason)
