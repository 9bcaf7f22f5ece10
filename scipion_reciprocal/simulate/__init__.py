"""Deterministic synthetic cryo-EM data in RELION's conventions (numpy/scipy/pandas only).

- :mod:`.molecule`: a small asymmetric blob molecule in several conformations.
- :mod:`.ctf`: RELION's CTF on an ``rfft2`` grid.
- :mod:`.particles`: particle images with known state, pose, shift and CTF; particle STAR files.
- :mod:`.relion_jobs`: Class3D / Class2D job folders with known class assignments.
- :mod:`.micrographs`: micrographs with particles, ice and carbon; good and bad boxes.
- :mod:`.dataset`: a complete demo project with its ground truth.
"""

from .ctf import ctf_2d
from .dataset import DemoDataset, build_demo_project
from .micrographs import (GoodBadSets, SimulatedMicrographs, good_bad_particle_sets,
                          simulate_micrographs, write_coordinates_star, write_good_bad_sets,
                          write_micrographs, write_micrographs_star)
from .molecule import molecule_maps, rotate_map
from .particles import SimulatedParticles, simulate_particles, write_particle_dataset
from .relion_jobs import noisy_labels, write_classification_job

__all__ = [
    'ctf_2d', 'DemoDataset', 'build_demo_project', 'GoodBadSets', 'SimulatedMicrographs',
    'good_bad_particle_sets', 'simulate_micrographs', 'write_coordinates_star',
    'write_good_bad_sets', 'write_micrographs', 'write_micrographs_star', 'molecule_maps',
    'rotate_map', 'SimulatedParticles', 'simulate_particles', 'write_particle_dataset',
    'noisy_labels', 'write_classification_job',
]
