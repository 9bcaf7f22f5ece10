"""Several classifications of the same particles with known states, noise and junk.

:func:`simulate_runs` draws what the consensus verdict must recover: ``n_states`` true states
and junk particles, classified by ``n_runs`` runs of ``n_states + 1`` classes each.
:func:`write_consensus_project` writes such runs as a RELION project with particle images
(junk particles are images of noise only) and ``Class3D`` jobs.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .molecule import molecule_maps
from .particles import particle_table, simulate_particles, write_particle_dataset
from .relion_jobs import class_average_maps, noisy_labels, write_classification_job

__all__ = ['SimulatedRuns', 'simulate_runs', 'ConsensusProject', 'write_consensus_project',
           'JUNK']

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
                  seed=0, states=None):
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
    states : array-like of int, optional
        The true states (:data:`JUNK` for junk) instead of drawing them; ``n_particles`` and
        ``junk_fraction`` are then unused.

    Returns
    -------
    SimulatedRuns
    """
    rng = np.random.default_rng(seed)
    if states is None:
        n_junk = int(round(junk_fraction * n_particles))
        states = np.concatenate([np.arange(n_particles - n_junk) % n_states,
                                 np.full(n_junk, JUNK)])
        states = states[rng.permutation(n_particles)]
    else:
        states = np.asarray(states, dtype=np.int64)
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


@dataclass
class ConsensusProject:
    """A RELION project written by :func:`write_consensus_project`.

    Attributes
    ----------
    project_dir : pathlib.Path
    particles_star : pathlib.Path
        All particles (``Extract/job007/particles.star``), in the order of ``runs.states``.
    jobs : list of str
        ``Class3D/jobNNN`` of each run, in order.
    runs : SimulatedRuns
    truth_csv : pathlib.Path
        ``rlnImageName``, ``state`` (-1: junk), ``consistent`` and the class of every job.
    """

    project_dir: Path
    particles_star: Path
    jobs: list
    runs: SimulatedRuns
    truth_csv: Path


def write_consensus_project(project_dir, n_particles=600, n_states=3, n_runs=4,
                            flip_fraction=0.15, junk_fraction=0.1, box=32, pixel_size=4.0,
                            snr=0.5, first_job=90, seed=0):
    """Write particle images of ``n_states`` states and junk, and ``n_runs`` Class3D jobs
    classifying them as :func:`simulate_runs` does.

    State particles are projections of :func:`.molecule.molecule_maps` conformations with
    CTF and noise (``snr``); junk particles are noise of the same level (the projection of an
    empty map). Each job's class maps are the membership-weighted averages of the state maps
    (:func:`.relion_jobs.class_average_maps`); jobs are ``Class3D/job<first_job + r>`` with
    one iteration after the random start.

    Returns
    -------
    ConsensusProject
    """
    project_dir = Path(project_dir)
    seeds = [int(s) for s in np.random.SeedSequence(seed).generate_state(3)]
    maps = molecule_maps(n_states, box, pixel_size, seed=seeds[0])
    with_junk = np.concatenate([maps, np.zeros((1,) + maps.shape[1:], dtype=maps.dtype)])
    weights = [(1.0 - junk_fraction) / n_states] * n_states + [junk_fraction]
    particles = simulate_particles(with_junk, n_particles, state_probabilities=weights,
                                   pixel_size=pixel_size, snr=snr, seed=seeds[1])
    states = np.where(particles.states == n_states, JUNK, particles.states)
    runs = simulate_runs(n_particles, n_states, n_runs, flip_fraction, seed=seeds[2],
                         states=states)
    particles_star = write_particle_dataset(project_dir, particles, pixel_size)
    table = particle_table(particles, pixel_size)
    optics = particles.optics(pixel_size)
    jobs, truth = [], pd.DataFrame({'rlnImageName': table['rlnImageName'], 'state': states,
                                    'consistent': runs.consistent})
    for r, labels in enumerate(runs.labels):
        job = f'Class3D/job{first_job + r:03d}'
        class_maps = class_average_maps(with_junk, particles.states, labels, n_states + 1)
        write_classification_job(project_dir, job, table, labels, n_iterations=1, kind='3D',
                                 class_maps=class_maps, optics=optics, seed=seeds[2] + r)
        jobs.append(job)
        truth[job] = labels
    truth_csv = project_dir / 'Simulated' / 'consensus_truth.csv'
    truth_csv.parent.mkdir(parents=True, exist_ok=True)
    truth.to_csv(truth_csv, index=False)
    return ConsensusProject(project_dir=project_dir, particles_star=particles_star, jobs=jobs,
                            runs=runs, truth_csv=truth_csv)
