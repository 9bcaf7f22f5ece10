"""The demo project: every file in place, consistent with the returned ground truth."""
import numpy as np
import pandas as pd
import pytest

from scipion_reciprocal.formats.mrc import read_images, read_map
from scipion_reciprocal.formats.relion import parse_image_names
from scipion_reciprocal.formats.star import read_particles_star, read_star
from scipion_reciprocal.simulate.dataset import CLASS2D_JOB, CLASS3D_JOBS, build_demo_project

N = 60


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    return build_demo_project(tmp_path_factory.mktemp('demo'), seed=3, n_particles=N,
                              n_iterations=2, n_micrographs=2, micrograph_shape=(256, 256),
                              particles_per_micrograph=8)


def test_maps_and_particles(demo):
    assert [p.relative_to(demo.project_dir).as_posix() for p in demo.map_paths] == [
        'Simulated/maps/state_0.mrc', 'Simulated/maps/state_1.mrc', 'Simulated/maps/state_2.mrc']
    for state, path in enumerate(demo.map_paths):
        data, voxel = read_map(path)
        np.testing.assert_array_equal(data, demo.maps[state])
        assert voxel == pytest.approx(4.0)
    star = read_particles_star(demo.particles_star)
    assert demo.particles_star == demo.project_dir / 'Extract/job007/particles.star'
    assert len(star.particles) == N and star.optics['rlnImageSize'].tolist() == [32]
    indices, stacks = parse_image_names(star.particles['rlnImageName'])
    np.testing.assert_array_equal(read_images(demo.project_dir / stacks[0], indices),
                                  demo.particles.images)
    assert demo.true_states.shape == (N,)


def test_class_jobs_end_at_their_labels(demo):
    assert set(demo.class_jobs) == set(CLASS3D_JOBS) | {CLASS2D_JOB}
    assert set(demo.class3d_jobs) == set(CLASS3D_JOBS)
    for job, path in demo.class_jobs.items():
        assert path.exists() and path.parent == demo.project_dir / job
        particles = read_particles_star(path).particles
        np.testing.assert_array_equal(particles['rlnClassNumber'], demo.labels[job])
        assert particles['rlnImageName'].tolist() == \
            read_particles_star(demo.particles_star).particles['rlnImageName'].tolist()
    assert demo.class_jobs['Class3D/job087'].name == 'run_ct1_it002_data.star'
    assert read_star(demo.project_dir / 'Class2D/job008/job.star').blocks['job']['rlnJobType'] == 8


def test_labels_follow_the_documented_mappings(demo):
    states = demo.true_states
    for job, spec in CLASS3D_JOBS.items():
        labels = demo.labels[job]
        allowed = [np.atleast_1d(spec['mapping'][s]) for s in states]
        off = np.array([label not in ok for label, ok in zip(labels, allowed)])
        # Every reassigned particle left its mapped class(es); a split state's particle may
        # land in its sister class, so at most round(fraction * n) are off.
        assert off.sum() <= round(spec['flip_fraction'] * N)
        if all(np.ndim(c) == 0 for c in spec['mapping'].values()):
            assert off.sum() == round(spec['flip_fraction'] * N)


def test_truth_table(demo):
    truth = pd.read_csv(demo.truth_csv)
    assert truth['state'].tolist() == demo.true_states.tolist()
    for job, labels in demo.labels.items():
        assert truth[job].tolist() == labels.tolist()
    star = read_particles_star(demo.particles_star).particles
    assert truth['rlnImageName'].tolist() == star['rlnImageName'].tolist()


def test_micrograph_side(demo):
    assert len(demo.micrograph_paths) == 2 and all(p.exists() for p in demo.micrograph_paths)
    assert demo.micrographs_star.exists() and len(demo.coordinate_paths) == 2
    good = read_particles_star(demo.good_star).particles
    bad = read_particles_star(demo.bad_star).particles
    assert len(good) == 16 and len(bad) == 32  # twice as many bad boxes
    assert len(read_particles_star(demo.picked_star).particles) == 48
    np.testing.assert_array_equal(demo.good_bad.good.states, demo.micrographs.coordinates['state'])


def test_same_seed_same_project(demo, tmp_path):
    again = build_demo_project(tmp_path, seed=3, n_particles=N, n_iterations=2, n_micrographs=2,
                               micrograph_shape=(256, 256), particles_per_micrograph=8)
    np.testing.assert_array_equal(again.particles.images, demo.particles.images)
    for job in demo.labels:
        np.testing.assert_array_equal(again.labels[job], demo.labels[job])
    a = (again.class_jobs['Class3D/job086']).read_text()
    b = (demo.class_jobs['Class3D/job086']).read_text()
    assert a == b
