"""Base protocol for steps that run in a backend environment (RECOVAR/JAX, TensorFlow)."""
import os

from pwem.protocols import EMProtocol
from pyworkflow.constants import RUN_JOB_GPU_PARAM_SEARCH
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
                      help="Comma-separated GPU ids (as nvidia-smi numbers them) for the "
                           "backend. Scipion hands them to the step that runs it "
                           "(CUDA_VISIBLE_DEVICES); through a queue it asks for as many GPUs "
                           "and the job uses those the scheduler assigns.")

    # --------------------------- INFO functions -----------------------------
    def _validateBackend(self):
        from .. import Plugin
        return Plugin.validateBackend(self._backendName)

    # --------------------------- UTILS functions ----------------------------
    def _visibleGpus(self):
        """The form's GPU list ("0,1"), or '' when the form asks for no GPU: what the user
        asked for, for ``_validate``/``_warnings``.  Which GPUs a step gets is
        :meth:`assignedGpus`."""
        if not self.getAttributeValue(params.USE_GPU, False):
            return ""
        return ",".join(str(g) for g in self.getGpuList())

    def assignedGpus(self):
        """The GPUs Scipion assigns to the running step: the form's list, renumbered from 0
        when the protocol runs through a queue (the node's scheduler picked the devices),
        one slot of it for a parallel step; [] for a CPU run or a step inserted with
        ``needsGPU=False``."""
        if not self.getAttributeValue(params.USE_GPU, False):
            return []
        return list(self._stepsExecutor.getGpuList() or [])

    def runBackend(self, program, arguments, useGpu=None, cwd=None, gpus=None):
        """Run ``program`` (a .py path or ``-m module``/``-c code``) in the backend env.

        The GPUs are those Scipion assigns to the step: the command carries
        ``CUDA_VISIBLE_DEVICES=%(GPU)s``, which Scipion's ``runJob`` fills in.  ``useGpu``
        False (or ``gpus=""``) runs on the CPU with every GPU hidden; a true ``gpus`` (the
        form's list, as callers wrote before) means the assigned GPUs too.
        """
        from .. import Plugin
        if useGpu is None:
            useGpu = bool(gpus) if gpus is not None else True
        placeholder = useGpu and bool(self.assignedGpus())
        activation = Plugin.getActivation(self._backendName)
        if placeholder:  # runJob %-formats the command: every other % stays literal
            activation, program, arguments = (_literal(activation), _literal(program),
                                              _literal(arguments))
        self.runJob(backend_command(activation, program,
                                    RUN_JOB_GPU_PARAM_SEARCH if placeholder else ""),
                    arguments, env=Plugin.getEnviron(), cwd=cwd, numberOfMpi=1)

    @classmethod
    def backendProgram(cls, *relativePath):
        """Absolute path of a program shipped in ``scipion_reciprocal/backends``."""
        return os.path.join(os.path.dirname(os.path.dirname(__file__)), "backends", *relativePath)

    def backendDescription(self):
        return get_backend(self._backendName).description


def _literal(text):
    """``text`` as it must appear in a command that is %-formatted (% doubled)."""
    return str(text).replace("%", "%%")
