"""What the GPU check runs: data sizes, RECOVAR and classifier options, time limits.

Two plans: ``FULL`` (the check proper, on one GPU) and ``TINY`` (the developer's
``--allow-cpu --tiny`` run, which proves the logic end to end on a CPU in minutes).

Time limits. The check must finish in 10 minutes on one H100 after the environments exist.
Each phase has its own limit and a reserve that the phases before it may not use, so a slow
phase ends at its limit (stopped, reported as a timeout) instead of eating the time of the
phases after it. Where the limits come from (see the README section "GPU check"):

- simulation: measured here (2 shared cores): 128 px particles cost ~4.5 ms CPU each plus
  ~4 s CPU per state for the projector; 4096 px micrographs with 250 particles ~5.5 s CPU
  each. Spread over 16 cores: ~30 s for 20,000 particles, ~20 s for the 40 micrographs.
- RECOVAR pipeline: RECOVAR's own profiling lists 50-55 min for 100,000 particles of 128 px on
  one GPU (all latent dimensions, under a profiler); 20,000 particles with one latent
  dimension should take 3-6 min on an H100. Its CUDA kernel is compiled on first use (one
  architecture: ~30-60 s).
- analyze (k-means, no centre volumes, no UMAP): seconds of compute plus JAX start-up.
- classifier: TensorFlow trains the 285k-parameter CNN at ~2,300 images/s on 2 CPU cores,
  so 7,000 training images x 20 epochs take well under a minute on a GPU; picking scores
  ~1.3 million windows (20 micrographs, stride 16 px).
"""
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Phase:
    """A step of the check with its time limit and the time kept back for it.

    ``reserve`` is how many seconds of the overall budget the phases before this one must
    leave for it; ``limit`` the most it may run.
    """

    name: str
    limit: float
    reserve: float


@dataclass(frozen=True)
class Plan:
    """Sizes and options of one run of the check."""

    name: str
    # RECOVAR data set
    particles: int
    box: int
    pixel_size: float
    snr: float
    n_states: int
    zdim: int
    # Classifier data set (good boxes around particles, bad boxes around junk)
    classifier_box: int
    classifier_pixel_size: float
    micrograph_size: int
    particles_per_micrograph: int
    training_micrographs: int
    picking_micrographs: int
    epochs: int
    patience: int                      # epochs without a better validation loss before stopping
    # Comparisons
    compare_resolution: float          # Å; both maps low-passed to it before correlating
    budget: float                      # seconds for every phase after the installation
    phases: tuple = field(default=())

    @property
    def training_particles(self):
        """Good plus bad training boxes (as many bad as good)."""
        return 2 * self.training_micrographs * self.particles_per_micrograph

    def phase(self, name):
        for phase in self.phases:
            if phase.name == name:
                return phase
        raise KeyError(name)


#: Phase names, in the order both drivers run them (the offline driver skips some).
GPU, IMPORTS, BACKENDS, SIMULATE_RECOVAR, SIMULATE_CLASSIFIER, SCIPION_IMPORT, KERNEL, \
    CONVERT, PIPELINE, ANALYZE, TRAIN, CLASSIFY, PICK = (
        "gpu", "recovar imports", "backend check", "simulate recovar data",
        "simulate classifier data", "scipion import", "recovar cuda kernel",
        "recovar conversion", "recovar pipeline", "recovar analyze", "classifier train",
        "classifier classify", "classifier pick")


def _phases(overrides=None):
    """The phases with their limits and reserves in seconds (``overrides``: name -> pair)."""
    table = {  # name: (limit, reserve)
        GPU: (30, 5), IMPORTS: (120, 20), BACKENDS: (120, 20), SIMULATE_RECOVAR: (120, 20),
        SIMULATE_CLASSIFIER: (120, 20), SCIPION_IMPORT: (150, 30), KERNEL: (180, 30),
        CONVERT: (60, 10), PIPELINE: (420, 120), ANALYZE: (150, 45), TRAIN: (150, 45),
        CLASSIFY: (60, 20), PICK: (150, 45),
    }
    table.update(overrides or {})
    return tuple(Phase(name, limit, reserve) for name, (limit, reserve) in table.items())


FULL = Plan(
    name="full", particles=20000, box=128, pixel_size=1.0, snr=0.1, n_states=3, zdim=4,
    classifier_box=64, classifier_pixel_size=2.0, micrograph_size=4096,
    particles_per_micrograph=250, training_micrographs=20, picking_micrographs=20, epochs=20,
    patience=4,
    compare_resolution=8.0, budget=600.0, phases=_phases())

#: CI-sized data (the RECOVAR backend test's recipe, the classifier tests' micrographs); on 2
#: CPU cores RECOVAR's pipeline alone takes 4-7 minutes, hence the long limits.
TINY = Plan(
    name="tiny", particles=300, box=24, pixel_size=4.0, snr=1.0, n_states=2, zdim=2,
    classifier_box=32, classifier_pixel_size=4.0, micrograph_size=512,
    particles_per_micrograph=20, training_micrographs=12, picking_micrographs=3, epochs=30,
    patience=8,
    compare_resolution=16.0, budget=2400.0,
    phases=_phases({SCIPION_IMPORT: (300, 60), PIPELINE: (900, 600), ANALYZE: (300, 120),
                    TRAIN: (300, 60), CLASSIFY: (150, 30), PICK: (300, 60), IMPORTS: (300, 20),
                    BACKENDS: (300, 20)}))

PLANS = {plan.name: plan for plan in (FULL, TINY)}


@dataclass(frozen=True)
class RecovarOptions:
    """The protocol form values both drivers use (the offline driver builds the same commands).

    Pipeline: spherical mask, data sign flipped (RELION convention), one latent dimension,
    no downsampling below 256 px (the form's default). Analyze: k-means with one cluster per
    simulated state, no centre volumes (kernel regression is not part of the 10-minute
    check), no UMAP, no trajectories.
    """

    zdim: int
    n_clusters: int
    mask: str = "sphere"
    uninvert: str = "true"
    downsample: int = 256
    compute_centers: bool = False
    umap: bool = False
    trajectories: int = 0

    @classmethod
    def of(cls, plan):
        return cls(zdim=plan.zdim, n_clusters=plan.n_states)
