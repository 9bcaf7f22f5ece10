"""Base protocol for steps that run in a backend environment (RECOVAR/JAX, TensorFlow)."""
import os

from pwem.protocols import EMProtocol
from pyworkflow.protocol import params

from ..environments import backend_command, get_backend


class ProtBackend(EMProtocol):
    """Shares the GPU form, the environment check and the command wrapper.

    Subclasses set ``_backendName`` (a key of ``environments.BACKENDS``).  Steps that only
    convert files or register outputs are inserted with ``needsGPU=False``.
    """
    _backendName = None

    # --------------------------- DEFINE param functions ---------------------
    def _defineGpuParams(self, form):
        form.addHidden(params.USE_GPU, params.BooleanParam, default=True,
                       label="Use GPU", help="Run the backend on the GPUs listed below. "
                       "Where no GPU exists the backend runs on the CPU (slower).")
        form.addParam(params.GPU_LIST, params.StringParam, default="0", label="GPU IDs",
                      expertLevel=params.LEVEL_ADVANCED,
                      help="Comma-separated GPU ids (as nvidia-smi numbers them) given to the "
                           "backend through CUDA_VISIBLE_DEVICES. Scipion's queue system may "
                           "replace them with the GPUs the scheduler assigns.")

    # --------------------------- INFO functions -----------------------------
    def _validateBackend(self):
        from .. import Plugin
        return Plugin.validateBackend(self._backendName)

    # --------------------------- UTILS functions ----------------------------
    def _visibleGpus(self):
        """The GPU list for CUDA_VISIBLE_DEVICES, or '' for a CPU run."""
        if not self.getAttributeValue(params.USE_GPU, False):
            return ""
        return ",".join(str(g) for g in self.getGpuList())

    def runBackend(self, program, arguments, gpus=None, cwd=None):
        """Run ``program`` (a .py path or ``-m module``/``-c code``) in the backend env."""
        from .. import Plugin
        activation = Plugin.getActivation(self._backendName)
        visible = self._visibleGpus() if gpus is None else gpus
        self.runJob(backend_command(activation, program, visible), arguments,
                    env=Plugin.getEnviron(), cwd=cwd, numberOfMpi=1)

    @classmethod
    def backendProgram(cls, *relativePath):
        """Absolute path of a program shipped in ``scipion_reciprocal/backends``."""
        return os.path.join(os.path.dirname(os.path.dirname(__file__)), "backends", *relativePath)

    def backendDescription(self):
        return get_backend(self._backendName).description
