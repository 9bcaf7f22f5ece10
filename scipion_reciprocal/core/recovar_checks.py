"""Checks of RECOVAR 1.0.5 settings that the program itself gets wrong or accepts silently.

No Scipion imports; the protocols call these from ``_validate`` and before running a command.
"""
import numpy as np

#: RECOVAR's default ``--n-min-particles`` (fewest particles in a kernel-regression bin).
DEFAULT_MIN_PARTICLES = 100
#: Principal components RECOVAR 1.0.5 computes at most, and with --very-low-memory-option.
MAX_PCS, VERY_LOW_MEMORY_PCS = 200, 30


def half_set_sizes(subsets=None, n_particles=None):
    """Particles in each half set RECOVAR will use.

    ``subsets``: ``rlnRandomSubset`` of every particle (RECOVAR keeps RELION's half sets when
    every value is 1 or 2); otherwise RECOVAR splits the ``n_particles`` at random into
    ``n // 2`` and the rest.
    """
    if subsets is not None:
        subsets = np.asarray(subsets)
        if subsets.size and np.isin(subsets, (1, 2)).all():
            return [int((subsets == 1).sum()), int((subsets == 2).sum())]
        n_particles = subsets.size if n_particles is None else n_particles
    return [int(n_particles) // 2, int(n_particles) - int(n_particles) // 2]


def safe_min_particles(n_min, half_sizes):
    """``--n-min-particles`` that RECOVAR 1.0.5's kernel regression survives.

    RECOVAR sorts each half set's distances and takes element ``[n_min]`` after checking only
    ``size < n_min`` (``heterogeneity_volume.pick_minimum_discretization_size``): a half set
    of exactly ``n_min`` particles raises ``IndexError``. The value is lowered until no half
    set has that size.

    Returns
    -------
    value : int
    reason : str or None
        Why the value was changed (None when it was not).
    """
    value = int(n_min)
    while value in half_sizes and value > 1:
        value -= 1
    if value == n_min:
        return value, None
    return value, ("a half set holds exactly %d particles, which RECOVAR 1.0.5's kernel "
                   "regression cannot take as --n-min-particles (IndexError); using %d"
                   % (n_min, value))


def zdim_errors(zdims, n_particles, very_low_memory=False):
    """Why these latent dimensions cannot be computed for ``n_particles`` (list of texts)."""
    errors = []
    largest = max(zdims) if zdims else 0
    if largest >= n_particles:
        errors.append("latent dimension %d needs more particles than the %d given: a space of "
                      "n particles has at most n - 1 directions" % (largest, n_particles))
    limit = VERY_LOW_MEMORY_PCS if very_low_memory else MAX_PCS
    if largest > limit:
        errors.append("latent dimension %d exceeds the %d principal components RECOVAR computes%s"
                      % (largest, limit, " with --very-low-memory-option"
                         if very_low_memory else ""))
    return errors
