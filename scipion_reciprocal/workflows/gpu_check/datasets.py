"""The check's simulated data with its truth, written as RELION files (numpy/scipy/pandas only).

- RECOVAR: ``plan.particles`` particles of ``plan.box`` px in ``plan.n_states`` conformations
  (``Extract/job007/particles.star``), the true maps and each particle's state.
- Classifier: training micrographs give good boxes (around particles) and as many bad ones
  (ice, carbon, empty); separate picking micrographs are written as MRC files, with boxes
  around their particles and junk as held-out particles for the classify step, and their
  true particle coordinates.

Projections run in ``processes`` forked workers, each micrograph with its own seed, so the
data do not depend on the number of processes.
"""
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ...formats.mrc import write_map
from ...simulate.micrographs import (concatenate_micrographs, good_bad_particle_sets,
                                     simulate_micrographs, write_good_bad_sets, write_micrographs)
from ...simulate.molecule import molecule_maps
from ...simulate.particles import simulate_particles, write_particle_dataset

MAPS_FOLDER = "Simulated/maps"
STATES_NPY = "Simulated/states.npy"
TRAINING_JOBS = ("Extract/job010", "Select/job011", "Select/job012")
HELD_OUT_JOBS = ("Extract/job020", "Select/job021", "Select/job022")
TRAINING_FOLDER = "MotionCorr/job002/Movies"   # named in the training boxes, not written
PICKING_FOLDER = "MotionCorr/job030/Movies"
PICKING_TRUTH_CSV = "Simulated/picking_truth.csv"


@dataclass
class RecovarData:
    project_dir: Path
    particles_star: Path
    maps: np.ndarray           # (n_states, box, box, box) true conformations
    states: np.ndarray         # (n,) true state of particle i (row i of the STAR file)
    pixel_size: float

    @property
    def box(self):
        return self.maps.shape[-1]


@dataclass
class ClassifierData:
    project_dir: Path
    good_star: Path            # training boxes around particles
    bad_star: Path             # training boxes around junk
    held_out_star: Path        # picking micrographs' boxes: the good ones first
    n_held_out_good: int       # images 1..n of the held-out stack are particles
    n_training: int            # good plus bad training boxes
    micrograph_folder: Path    # picking micrographs, mic_NNN.mrc
    truth: pd.DataFrame        # picking micrographs' particles: micrograph (file name), x, y
    pixel_size: float
    box: int


def simulate_recovar_data(root, plan, processes=1, seed=0):
    """Simulate and write the RECOVAR particles (see the module docstring)."""
    root = Path(root)
    seeds = np.random.SeedSequence(seed).generate_state(2)
    maps = molecule_maps(plan.n_states, plan.box, plan.pixel_size, seed=int(seeds[0]))
    sim = simulate_particles(maps, plan.particles, pixel_size=plan.pixel_size, snr=plan.snr,
                             seed=int(seeds[1]), processes=processes)
    star = write_particle_dataset(root, sim)
    (root / MAPS_FOLDER).mkdir(parents=True, exist_ok=True)
    for state, volume in enumerate(maps):
        write_map(root / MAPS_FOLDER / ("state_%d.mrc" % state), volume, plan.pixel_size)
    np.save(root / STATES_NPY, sim.states)
    return RecovarData(project_dir=root, particles_star=star, maps=maps, states=sim.states,
                       pixel_size=plan.pixel_size)


def simulate_classifier_data(root, plan, processes=1, seed=1):
    """Simulate the training boxes and the picking micrographs (see the module docstring)."""
    root = Path(root)
    seeds = np.random.SeedSequence(seed)
    maps_seed, training_seed, picking_seed, boxes_seed = seeds.generate_state(4)
    maps = molecule_maps(plan.n_states, plan.classifier_box, plan.classifier_pixel_size,
                         seed=int(maps_seed))
    training = simulate_micrograph_set(maps, plan, plan.training_micrographs, training_seed,
                                       processes)
    picking = simulate_micrograph_set(maps, plan, plan.picking_micrographs, picking_seed,
                                      processes)
    boxes = [good_bad_particle_sets(sim, n_bad=len(sim.coordinates), seed=int(s), folder=folder)
             for sim, s, folder in zip((training, picking), np.random.SeedSequence(boxes_seed)
                                       .generate_state(2), (TRAINING_FOLDER, PICKING_FOLDER))]
    _, good_star, bad_star = write_good_bad_sets(root, boxes[0], *TRAINING_JOBS)
    held_out_star, _, _ = write_good_bad_sets(root, boxes[1], *HELD_OUT_JOBS)
    paths = write_micrographs(root, picking, folder=PICKING_FOLDER)
    names = np.array([p.name for p in paths])
    truth = pd.DataFrame({"micrograph": names[picking.coordinates["micrograph"].to_numpy()],
                          "x": picking.coordinates["x"].to_numpy(),
                          "y": picking.coordinates["y"].to_numpy()})
    (root / PICKING_TRUTH_CSV).parent.mkdir(parents=True, exist_ok=True)
    truth.to_csv(root / PICKING_TRUTH_CSV, index=False)
    return ClassifierData(project_dir=root, good_star=good_star, bad_star=bad_star,
                          held_out_star=held_out_star, n_held_out_good=len(boxes[1].good.images),
                          n_training=len(boxes[0].good.images) + len(boxes[0].bad.images),
                          micrograph_folder=root / PICKING_FOLDER, truth=truth,
                          pixel_size=plan.classifier_pixel_size, box=plan.classifier_box)


def simulate_micrograph_set(maps, plan, count, seed, processes=1):
    """``count`` micrographs of the plan's size, each simulated with its own seed."""
    seeds = [int(s) for s in np.random.SeedSequence(int(seed)).generate_state(count)]
    jobs = [(maps, plan, s) for s in seeds]
    if processes > 1 and count > 1 and "fork" in mp.get_all_start_methods():
        with ProcessPoolExecutor(min(processes, count), mp_context=mp.get_context("fork")) as pool:
            sims = list(pool.map(_one_micrograph, jobs))
    else:
        sims = [_one_micrograph(job) for job in jobs]
    return concatenate_micrographs(sims)


def _one_micrograph(job):
    maps, plan, seed = job
    size = plan.micrograph_size
    return simulate_micrographs(maps, 1, (size, size), plan.particles_per_micrograph,
                                plan.classifier_box, plan.classifier_pixel_size, seed=seed)

