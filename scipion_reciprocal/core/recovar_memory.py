"""Memory estimate of a RECOVAR 1.0.5 run, and the options that make it fit a machine.

An estimate from the run's sizes, not a measurement. RECOVAR sizes its batches to a budget
(``--gpu-budget-gb``; by default what JAX reports: 75 % of the GPU, or half the free RAM on a
CPU) and on top of them keeps arrays that grow with the box ``D``:

============== ============================================== ==============================
term           size                                           where
============== ============================================== ==============================
runtime        Python, JAX, RECOVAR; more for the commands    host
               that reconstruct (XLA's compiled programs)
images         ``N * D^2 * 4`` bytes (none with ``--lazy``)   host
columns        covariance columns, both half sets:            device
               ``2 * n_cols * D^3 * 8`` (n_cols 300; 50 with
               ``--low-memory-option``, 25 with the very low)
mean           mean half maps on the 2x-upsampled grid:       device
               ``2 * (2D)^3 * 12``
basis          ``n_pcs * D^3 * 8`` (n_pcs 200; 30 very low)   device
kernel         kernel regression: ``n_bins * D^3 * 32``       device
               (RECOVAR's README)
batches        the budget (halved / quartered by the low      device
               options) + ``BATCH_OVERHEAD_GB``, but no more
               than the data fill: ``BYTES_PER_IMAGE_PIXEL *
               N * D^2``
============== ============================================== ==============================

On a CPU "device" is host memory too. The constants were checked against RECOVAR's README
(about 200 GB at 256 px with the defaults, about 60 GB with ``--low-memory-option``) and
against peak memory measured on CPU runs (``docs/recovar-1.0.5.md``, "Memory planning").

This module imports nothing from Scipion; :func:`plan` takes the machine's memory as numbers.
"""
import math
from dataclasses import dataclass, field, replace

GB = 1e9
#: Python + JAX + RECOVAR loaded (analyze without volumes peaks at 0.5 GB on a CPU), and what
#: the commands that reconstruct add (the pipeline on 120 particles of 16 px peaks at 2.1 GB).
RUNTIME_GB = 0.6
COMPUTE_RUNTIME_GB = 1.5
#: Covariance columns sampled by the pipeline, per memory option.
COLUMNS = {"normal": 300, "low": 50, "very low": 25}
#: Share of the budget that RECOVAR's batches take, per memory option.
BATCH_SHARE = {"normal": 1.0, "low": 0.5, "very low": 0.25}
#: Principal components computed (RECOVAR lowers them to fit its budget; 30 with very low).
N_PCS = {"normal": 200, "low": 200, "very low": 30}
#: Working memory per image pixel when all images fit in one batch (small data sets): fitted
#: to CPU pipeline runs of 120 x 16, 300 x 24 and 300 x 32 px (2.1, 4.6 and 8.3 GB peak).
BYTES_PER_IMAGE_PIXEL = 21e3
#: What the batches take beyond the budget: 3.0 GB peak at --gpu-budget-gb 1 (300 x 32 px).
BATCH_OVERHEAD_GB = 1.2
#: What JAX reports (and RECOVAR takes as its default budget) of a GPU's memory.
JAX_GPU_FRACTION = 0.75
#: A GPU whose memory cannot be read here (the job runs elsewhere): its part is not compared.
GPU_UNKNOWN = math.inf
#: Share of the free memory a plan may fill.
SAFETY = 0.9
MEMORY_OPTIONS = ("normal", "low", "very low")
MEMORY_FLAGS = {"normal": None, "low": "--low-memory-option",
                "very low": "--very-low-memory-option"}
#: Commands whose memory the estimate covers and what they compute.
PIPELINE_COMMANDS = ("pipeline", "pipeline_with_outliers")
KERNEL_COMMANDS = ("analyze", "compute_state", "compute_trajectory",
                   "reconstruct_from_external_embedding")
#: Commands that take ``--lazy``.
LAZY_COMMANDS = PIPELINE_COMMANDS + KERNEL_COMMANDS[:3]
#: RECOVAR's pipeline downsamples to this box unless told otherwise.
DEFAULT_DOWNSAMPLE = 256
#: Smallest box ``--downsample`` is offered down to.
MIN_DOWNSAMPLE = 32


#: What each term of the estimate is, in words.
TERM_NAMES = {"runtime": "Python and JAX", "images": "the particle images in memory",
              "columns": "the covariance columns", "mean": "the upsampled mean",
              "basis": "the principal components", "kernel": "the kernel-regression bins",
              "batches": "the batches"}


class MemoryPlanError(ValueError):
    """A run that does not fit even with every memory option.

    Attributes
    ----------
    largest_term : str
        The estimate's largest term (``kernel``, ``images``, ``columns`` ...), which names
        the parameter to change.
    """

    def __init__(self, message, largest_term):
        super().__init__(message)
        self.largest_term = largest_term


@dataclass(frozen=True)
class MemoryRequest:
    """What a RECOVAR command will process.

    Attributes
    ----------
    command : str
        RECOVAR command (``pipeline``, ``analyze``, ``compute_state``, ...).
    box : int
        Box of the particles (pipeline) or of the pipeline's results (other commands), px.
    n_particles : int
    kernel_volumes : bool
        Whether the command computes kernel-regression volumes (analyze: centres or
        trajectories).
    n_bins : int
        Kernel-regression bins.
    memory : str
        ``normal``, ``low`` or ``very low`` (``--low-memory-option``, ``--very-low-memory-option``).
    lazy : bool
        ``--lazy``: images read per batch.
    budget_gb : float or None
        ``--gpu-budget-gb``; None for RECOVAR's default.
    downsample : int or None
        Pipeline only: ``--downsample`` (0: ``--no-downsample``; None: RECOVAR's default,
        256). The box RECOVAR works at is :meth:`working_box`.
    """

    command: str
    box: int
    n_particles: int
    kernel_volumes: bool = True
    n_bins: int = 50
    memory: str = "normal"
    lazy: bool = False
    budget_gb: float = None
    downsample: int = None

    def working_box(self):
        """The box RECOVAR works at."""
        if self.command not in PIPELINE_COMMANDS:
            return int(self.box)
        return effective_box(self.box, DEFAULT_DOWNSAMPLE if self.downsample is None
                             else self.downsample)

    def options(self):
        """The memory-related RECOVAR options of this request: ``{option: value or True}``."""
        out = {}
        if MEMORY_FLAGS[self.memory]:
            out[MEMORY_FLAGS[self.memory]] = True
        if self.lazy:
            out["--lazy"] = True
        if self.budget_gb:
            out["--gpu-budget-gb"] = "%g" % self.budget_gb
        if self.command in PIPELINE_COMMANDS and self.downsample is not None:
            if self.downsample > 0:
                out["--downsample"] = int(self.downsample)
            else:
                out["--no-downsample"] = True
        return out

    def flags(self):
        """:meth:`options` as command-line words."""
        return _words(self.options())


@dataclass
class MemoryEstimate:
    """Estimated peaks (GB). ``gpu_gb`` is None for a CPU run (everything is host memory)."""

    host_gb: float
    gpu_gb: float
    budget_gb: float
    terms: dict = field(default_factory=dict)

    def describe(self):
        where = ("GPU %.1f GB + host %.1f GB" % (self.gpu_gb, self.host_gb)
                 if self.gpu_gb is not None else "%.1f GB of host memory" % self.host_gb)
        return "about %s (estimate)" % where


def effective_box(box, downsample):
    """The box RECOVAR's pipeline works at given ``--downsample`` (None/0: no downsampling);
    RECOVAR keeps boxes within 12.5 % of the target as they are."""
    if not downsample or box <= downsample * 1.125:
        return int(box)
    return int(downsample)


def default_budget_gb(gpu_gb, host_available_gb):
    """RECOVAR's default batch budget: JAX's share of the GPU, or half the free RAM."""
    if gpu_gb is not None:
        return JAX_GPU_FRACTION * gpu_gb
    return max(1.0, host_available_gb // 2)


def estimate(request, gpu_gb=None, host_available_gb=16.0):
    """Estimated peak memory of ``request`` on a machine.

    Parameters
    ----------
    request : MemoryRequest
    gpu_gb : float or None
        Memory of the (smallest) GPU the run gets; None for a CPU run.
    host_available_gb : float
        Free host memory (sets RECOVAR's CPU budget).

    Returns
    -------
    MemoryEstimate
    """
    box = request.working_box()
    n, memory = int(request.n_particles), request.memory
    budget = request.budget_gb or default_budget_gb(gpu_gb, host_available_gb)
    if not math.isfinite(budget):  # a GPU of unknown size: the data bound the batches
        budget = BYTES_PER_IMAGE_PIXEL * n * request.working_box() ** 2 / GB
    volume = box ** 3
    device = {}
    if request.command in PIPELINE_COMMANDS:
        device["columns"] = 2 * COLUMNS[memory] * volume * 8 / GB
        device["mean"] = 2 * (2 * box) ** 3 * 12 / GB
        device["basis"] = N_PCS[memory] * volume * 8 / GB
    if request.command in KERNEL_COMMANDS and request.kernel_volumes:
        device["kernel"] = request.n_bins * volume * 32 / GB
    if request.command in PIPELINE_COMMANDS or device:
        device["batches"] = min(BATCH_SHARE[memory] * budget + BATCH_OVERHEAD_GB,
                                BYTES_PER_IMAGE_PIXEL * n * box * box / GB)
    host = {"runtime": COMPUTE_RUNTIME_GB if device else RUNTIME_GB}
    if not request.lazy and device:
        host["images"] = n * box * box * 4 / GB
    terms = {**host, **device}
    if gpu_gb is None:
        return MemoryEstimate(sum(terms.values()), None, budget, terms)
    return MemoryEstimate(sum(host.values()), sum(device.values()), budget, terms)


@dataclass
class MemoryPlan:
    """What :func:`plan` found: the estimate as asked, and the request that fits."""

    asked_request: MemoryRequest
    request: MemoryRequest
    asked: MemoryEstimate
    fitted: MemoryEstimate
    gpu_gb: float
    host_gb: float

    @property
    def fits(self):
        """True when the run fits as asked."""
        return self.request == self.asked_request

    @property
    def added_options(self):
        """RECOVAR options (with their values) the fitting request adds or changes."""
        asked = self.asked_request.options()
        return {name: value for name, value in self.request.options().items()
                if asked.get(name, False) != value}

    def added_flags(self):
        """:attr:`added_options` as command-line words."""
        return _words(self.added_options)

    def machine(self):
        if self.gpu_gb == GPU_UNKNOWN:
            return "GPU memory unknown here, host %.1f GB free" % self.host_gb
        if self.gpu_gb is not None:
            return "GPU %.1f GB free, host %.1f GB free" % (self.gpu_gb, self.host_gb)
        return "no GPU, host %.1f GB free" % self.host_gb


def _words(options):
    out = []
    for name, value in options.items():
        out += [name] if value is True else [name, str(value)]
    return out


def _fits(estimated, gpu_gb, host_gb):
    if estimated.gpu_gb is not None and estimated.gpu_gb > SAFETY * gpu_gb:
        return False
    return estimated.host_gb <= SAFETY * host_gb


def _smaller_budget(request, gpu_gb, host_gb):
    """``request`` with the largest budget whose batches fit beside the fixed arrays, or None."""
    if gpu_gb == GPU_UNKNOWN:
        return None
    estimated = estimate(request, gpu_gb, host_gb)
    used = estimated.gpu_gb if gpu_gb is not None else estimated.host_gb
    fixed = used - estimated.terms.get("batches", 0.0)
    budget = int((SAFETY * (gpu_gb if gpu_gb is not None else host_gb) - fixed
                  - BATCH_OVERHEAD_GB) / BATCH_SHARE[request.memory])
    if budget < 1 or budget >= estimated.budget_gb:
        return None
    return replace(request, budget_gb=float(budget))


def _candidates(request, gpu_gb, host_gb, allow_downsample):
    """Requests in the order the plan tries them: least cost to the result first. Each
    memory option is tried as asked, then with a smaller budget, then both again with
    ``--lazy`` (which only spares host memory)."""
    lazy_values = [request.lazy] + ([True] if request.command in LAZY_COMMANDS
                                    and not request.lazy else [])
    targets = [request.downsample]
    if allow_downsample and request.command in PIPELINE_COMMANDS:
        working = request.working_box()
        targets += [t for t in range(working - working % 32, MIN_DOWNSAMPLE - 1, -32)
                    if t * 1.125 < working]
    for target in targets:
        for memory in MEMORY_OPTIONS[MEMORY_OPTIONS.index(request.memory):]:
            for lazy in lazy_values:
                base = replace(request, memory=memory, lazy=lazy, downsample=target)
                yield base
                smaller = _smaller_budget(base, gpu_gb, host_gb)
                if smaller is not None:
                    yield smaller


def plan(request, gpu_gb, host_gb, allow_downsample=True):
    """The least costly change of ``request`` that fits the machine.

    Parameters
    ----------
    request : MemoryRequest
    gpu_gb : float or None
        Free memory of the smallest GPU the run gets; None for a CPU run; ``GPU_UNKNOWN``
        when the run gets a GPU whose memory cannot be read here (only host memory is
        compared then).
    host_gb : float
        Free host memory.
    allow_downsample : bool
        Whether ``--downsample`` may be proposed (pipeline only).

    Returns
    -------
    MemoryPlan
        ``request`` is the asked request when it fits, otherwise the first that fits of, in
        this order: ``--lazy``; a smaller ``--gpu-budget-gb``; ``--low-memory-option``, then
        ``--very-low-memory-option`` (each also with a smaller budget); ``--downsample`` to
        a smaller box (multiples of 32, largest first).

    Raises
    ------
    MemoryPlanError
        When nothing fits; the message names the sizes and the machine.
    """
    asked = estimate(request, gpu_gb, host_gb)
    for candidate in _candidates(request, gpu_gb, host_gb, allow_downsample):
        estimated = estimate(candidate, gpu_gb, host_gb)
        if _fits(estimated, gpu_gb, host_gb):
            return MemoryPlan(request, candidate, asked, estimated, gpu_gb, host_gb)
    machine = ("%.1f GB of free host memory (no GPU)" % host_gb if gpu_gb is None else
               "%.1f GB of free host memory" % host_gb if gpu_gb == GPU_UNKNOWN else
               "a GPU with %.1f GB free and %.1f GB of free host memory" % (gpu_gb, host_gb))
    smallest = estimate(replace(request, memory="very low"), gpu_gb, host_gb)
    largest = max(smallest.terms, key=smallest.terms.get)
    raise MemoryPlanError(
        "RECOVAR %s on %d particles of %d px needs %s: more than %s, even with --lazy, "
        "--very-low-memory-option and a smaller --gpu-budget-gb%s (largest part: %s, %.1f GB)"
        % (request.command, request.n_particles, request.working_box(), asked.describe(), machine,
           ", or --downsample %d" % MIN_DOWNSAMPLE
           if allow_downsample and request.command in PIPELINE_COMMANDS else "",
           TERM_NAMES[largest], smallest.terms[largest]), largest)
