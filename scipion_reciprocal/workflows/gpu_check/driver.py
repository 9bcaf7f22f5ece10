"""What the two drivers of the GPU check share: the GPU, RECOVAR's kernel, RECOVAR's figures."""
from pathlib import Path

from ...formats.mrc import read_map
from . import figures, plan as plans
from .recovar_commands import recovar_log_facts
from .runner import CheckRun, PhaseFailed, gpu_inventory

KERNEL_FALLBACK_NOTE = (
    "RECOVAR's CUDA kernel could not be built (it needs nvcc and make: a CUDA toolkit; pip's "
    "CUDA wheels bring no nvcc): RECOVAR runs its JAX GPU path (RECOVAR_DISABLE_CUDA=1), "
    "2-3x slower, whose back-projection the plugin's launcher corrects (without it volumes "
    "come out magnified 2x: see mean_vs_truth_magnified_2x).")


class CheckDriver:
    """Base of the drivers: subclasses set ``setting`` and ``phases`` and write the phases."""

    setting, phases = None, ()
    #: Phases that run Scipion protocols (their CPU time is not counted; see CheckRun).
    protocol_phases = ()

    def __init__(self, plan, out_dir, allow_cpu=False, processes=1, log=print):
        self.plan, self.allow_cpu, self.processes, self.log = plan, allow_cpu, processes, log
        self.out = Path(out_dir).resolve()
        self.options = plans.RecovarOptions.of(plan)
        self.gpus = gpu_inventory()
        self.recovar_data = None
        self.run = CheckRun(plan, self.setting, self.out, self.phases, log=log,
                            detached=self.protocol_phases)

    def gpu_phase(self, limit):
        if not self.gpus and not self.allow_cpu:
            raise PhaseFailed("nvidia-smi lists no GPU")
        return {"gpus": self.gpus, "message": ", ".join(g["name"] for g in self.gpus) or "CPU"}

    def run_kernel_phase(self):
        """Build RECOVAR's CUDA kernel (GPU only); without it, RECOVAR's JAX GPU path."""
        if not self.gpus:
            self.run.skip(plans.KERNEL, "no GPU: RECOVAR runs on the CPU (--allow-cpu)")
        elif self.run.run(plans.KERNEL, self.kernel_phase) is None:
            self.disable_cuda_kernel()
            self.run.note(KERNEL_FALLBACK_NOTE)

    def kernel_phase(self, limit):
        raise NotImplementedError

    def disable_cuda_kernel(self):
        """Make the RECOVAR runs that follow use RECOVAR_DISABLE_CUDA=1."""
        raise NotImplementedError

    def record_mean(self, mean_path, job_dir):
        """The mean-vs-truth figures of a pipeline run, and the phase's details."""
        data = self.recovar_data
        mean, _ = read_map(mean_path)
        found = figures.mean_vs_truth(mean, data.maps, data.states, data.pixel_size,
                                      self.plan.compare_resolution)
        for name, value in found.items():
            self.run.figure(name, value)
        facts = recovar_log_facts(job_dir)
        facts["message"] = "mean vs truth %.3f at %g A (%s)" % (
            found["mean_vs_truth"], self.plan.compare_resolution, facts.get("backend", "?"))
        return facts

    def record_kmeans(self, labels, states):
        """The k-means figures of an analyze run, and the phase's details."""
        found = figures.kmeans_agreement(labels, states)
        for name, value in found.items():
            self.run.figure(name, value)
        found["message"] = "k-means ARI %.3f over %d particles" % (found["kmeans_ari"],
                                                                  found["kmeans_particles"])
        return found
