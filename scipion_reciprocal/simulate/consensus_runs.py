"""Several classifications of the same particles with known states, noise and junk.

:func:`simulate_runs` draws what the consensus verdict must recover: ``n_states`` true states
and junk particles, classified by ``n_runs`` runs of ``n_states + 1`` classes each.
"""

from dataclasses import dataclass

import numpy as np

from .relion_jobs import noisy_labels

__all__ = ['SimulatedRuns', 'simulate_runs', 'JUNK']

#: State of junk particles in :attr:`SimulatedRuns.states`.
JUNK = -1


@dataclass
class SimulatedRuns:
    """Runs drawn by :func:`simulate_runs`.

    Attributes
    ----------
    states : numpy.ndarray
        ``(n,)`` true state ``0..n_states-1`` of each particle, :data:`JUNK` for junk.
    labels : list of numpy.ndarray
        Per run, ``(n,)`` class numbers ``1..n_states+1``.
    state_classes : list of numpy.ndarray
        Per run, the class of each state (``state_classes[r][s]``).
    junk_classes : list of int
        Per run, the class that holds no state (the junk class).
    consistent : numpy.ndarray of bool
        Particles of a state put in its class by every run (neither junk nor reassigned).
    """

    states: np.ndarray
    labels: list
    state_classes: list
    junk_classes: list
    consistent: np.ndarray


def simulate_runs(n_particles, n_states, n_runs=4, flip_fraction=0.15, junk_fraction=0.1,
                  seed=0):
    """Classifications of ``n_states`` true states plus junk by ``n_runs`` runs.

    Exact behaviour, per run (``K = n_states + 1`` classes, numbered in a random order per
    run): the particles of state ``s`` get the run's class of ``s``; junk particles are
    reassigned at random (split into ``K`` parts of random members, one per class, as
    :func:`.relion_jobs.noisy_labels` splits a state over several classes); then exactly
    ``round(flip_fraction * n)`` particles, chosen at random, are moved to a random other
    class. The class no state maps to is the run's junk class.

    Parameters
    ----------
    n_particles, n_states, n_runs : int
    flip_fraction : float
        Fraction of particles reassigned at random in each run.
    junk_fraction : float
        Fraction of particles that are junk (the states share the rest equally).
    seed : int

    Returns
    -------
    SimulatedRuns
    """
    rng = np.random.default_rng(seed)
    n_junk = int(round(junk_fraction * n_particles))
    states = np.concatenate([np.arange(n_particles - n_junk) % n_states,
                             np.full(n_junk, JUNK)])
    states = states[rng.permutation(n_particles)]
    codes = np.where(states == JUNK, n_states, states)      # noisy_labels wants 0..n_states
    k = n_states + 1
    labels, state_classes, junk_classes = [], [], []
    consistent = states != JUNK
    for run in range(n_runs):
        order = rng.permutation(k) + 1
        mapping = {s: int(order[s]) for s in range(n_states)}
        mapping[n_states] = rng.permutation(k) + 1
        run_labels = noisy_labels(codes, k, mapping, flip_fraction,
                                  seed=int(rng.integers(2 ** 31)))
        labels.append(run_labels)
        state_classes.append(order[:n_states].copy())
        junk_classes.append(int(order[n_states]))
        consistent &= run_labels == np.where(states == JUNK, 0, order[np.maximum(states, 0)])
    return SimulatedRuns(states=states, labels=labels, state_classes=state_classes,
                         junk_classes=junk_classes, consistent=consistent)
