"""Check that a backend environment works: versions and visible devices."""
import json
import shlex

from pyworkflow.object import String
from pyworkflow.protocol import params

from ..environments import BACKENDS, get_backend
from .backend_base import ProtBackend

BACKEND_NAMES = sorted(BACKENDS)
REPORT_FILE = "selfcheck.json"


class ProtBackendCheck(ProtBackend):
    """Runs the self-check of a backend environment (RECOVAR/JAX or TensorFlow) and reports
    the installed versions and the devices (CPU/GPU) the backend sees. Use it after installing
    a backend, or on a cluster node, before launching long jobs."""
    _label = "check backend environment"
    _possibleOutputs = {}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.summaryVar = String()

    # --------------------------- DEFINE param functions ---------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("backend", params.EnumParam, choices=BACKEND_NAMES, default=0,
                      label="Backend",
                      help="Environment to check. recovar: JAX + RECOVAR (heterogeneity "
                           "analysis). classifier: TensorFlow (good/bad particle classifier). "
                           "Each is installed with 'python -m scipion installb NAME'.")
        self._defineGpuParams(form)

    # --------------------------- INSERT steps functions ---------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.selfCheckStep)
        self._insertFunctionStep(self.reportStep, needsGPU=False)

    # --------------------------- STEPS functions ----------------------------
    def selfCheckStep(self):
        code = get_backend(self._backendName).selfcheck_code
        self.runBackend("-c", "%s > %s" % (shlex.quote(code),
                                            shlex.quote(self._getExtraPath(REPORT_FILE))))

    def reportStep(self):
        report = self._readReport()
        self.summaryVar.set("%s: %s; devices: %s (CUDA_VISIBLE_DEVICES=%s)" % (
            report["backend"], ", ".join("%s %s" % kv for kv in sorted(report["versions"].items())),
            ", ".join(report["devices"]), report.get("cuda_visible_devices")))
        self._store(self.summaryVar)

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        return self._validateBackend()

    def _summary(self):
        if self.summaryVar.hasValue():
            return [self.summaryVar.get()]
        return ["Checks the %s environment." % self._backendName]

    def _methods(self):
        return ["The %s backend environment was checked (%s)."
                % (self._backendName, self.backendDescription())]

    def _citations(self):
        return ["Gilles2025recovar"] if self._backendName == "recovar" else ["Abadi2016tensorflow"]

    # --------------------------- UTILS functions ----------------------------
    @property
    def _backendName(self):
        return BACKEND_NAMES[self.backend.get()]

    def _readReport(self):
        with open(self._getExtraPath(REPORT_FILE)) as handle:
            return json.loads(handle.read().strip().splitlines()[-1])
