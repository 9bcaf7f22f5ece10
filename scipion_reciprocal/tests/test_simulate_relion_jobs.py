"""Simulated RELION classification jobs: labels, files, and fidelity to real RELION 3.1 output."""
import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from scipion_reciprocal.formats.star import read_particles_star, read_star
from scipion_reciprocal.simulate.molecule import molecule_maps
from scipion_reciprocal.simulate.particles import particle_table, simulate_particles
from scipion_reciprocal.simulate.relion_jobs import (class_average_images, class_average_maps,
                                                     noisy_labels, view_classes,
                                                     write_classification_job)
from scipion_reciprocal.tests.realdata import REALDATA, requires_realdata

N_ITER = 6


@pytest.fixture(scope='module')
def maps():
    return molecule_maps(3, 24, 5.0, seed=1)


@pytest.fixture(scope='module')
def sim(maps):
    return simulate_particles(maps, 90, pixel_size=5.0, snr=1.0, seed=2)


@pytest.fixture(scope='module')
def job3d(tmp_path_factory, maps, sim):
    project = tmp_path_factory.mktemp('project')
    labels = noisy_labels(sim.states, 4, {0: 1, 1: 2, 2: [3, 4]}, 0.1, seed=3)
    class_maps = class_average_maps(maps, sim.states, labels, 4)
    last = write_classification_job(project, 'Class3D/job085', particle_table(sim), labels,
                                    n_iterations=N_ITER, class_maps=class_maps,
                                    optics=sim.optics(), seed=4)
    return project, last, labels, class_maps


def test_noisy_labels_flips_exactly_the_requested_number():
    states = np.repeat([0, 1, 2], [50, 30, 20])
    labels = noisy_labels(states, 3, {0: 2, 1: 3, 2: 1}, flip_fraction=0.13, seed=0)
    mapped = np.array([2, 3, 1])[states]
    assert labels.dtype == np.int64 and set(np.unique(labels)) <= {1, 2, 3}
    assert np.sum(labels != mapped) == 13
    np.testing.assert_array_equal(labels, noisy_labels(states, 3, {0: 2, 1: 3, 2: 1}, 0.13, 0))
    assert not np.array_equal(labels, noisy_labels(states, 3, {0: 2, 1: 3, 2: 1}, 0.13, 1))
    np.testing.assert_array_equal(noisy_labels(states, 3), states + 1)


def test_noisy_labels_splits_a_state_evenly():
    states = np.repeat([0, 1, 2], [40, 40, 41])
    labels = noisy_labels(states, 4, [1, 2, [3, 4]], seed=5)
    np.testing.assert_array_equal(labels[states == 0], 1)
    np.testing.assert_array_equal(labels[states == 1], 2)
    assert np.bincount(labels[states == 2]).tolist() == [0, 0, 0, 21, 20]
    with pytest.raises(ValueError, match='outside'):
        noisy_labels(states, 3, [1, 2, [3, 4]])
    with pytest.raises(ValueError, match='no class'):
        noisy_labels(states, 3, {0: 1, 1: 2})


def test_class_average_maps_are_membership_weighted(maps):
    states = np.array([0, 0, 1, 2, 2, 2])
    labels = np.array([1, 1, 2, 2, 3, 3])
    averages = class_average_maps(maps, states, labels, 4)
    np.testing.assert_allclose(averages[0], maps[0], atol=1e-6)
    np.testing.assert_allclose(averages[1], (maps[1] + maps[2]) / 2, atol=1e-6)
    np.testing.assert_allclose(averages[2], maps[2], atol=1e-6)
    np.testing.assert_allclose(averages[3], (2 * maps[0] + maps[1] + 3 * maps[2]) / 6, atol=1e-6)


def test_view_classes_group_particles_by_direction(sim, maps):
    labels, directions = view_classes(sim.angles, 5, seed=0)
    assert set(np.unique(labels)) == {1, 2, 3, 4, 5}
    beams = sim.matrices[:, 2, :]
    own = np.einsum('ij,ij->i', beams, directions[labels - 1])
    assert np.all(own[:, None] >= beams @ directions.T - 1e-12)
    images = class_average_images(maps, sim.states, labels, directions)
    assert images.shape == (5, 24, 24) and images.dtype == np.float32


def test_last_iteration_has_the_labels_and_the_class_maps(job3d, sim):
    project, last, labels, class_maps = job3d
    assert last == project / f'Class3D/job085/run_it{N_ITER:03d}_data.star'
    blocks = starfile.read(last, always_dict=True)
    particles = blocks['particles']
    np.testing.assert_array_equal(particles['rlnClassNumber'], labels)
    assert particles['rlnImageName'].tolist() == particle_table(sim)['rlnImageName'].tolist()
    np.testing.assert_allclose(particles['rlnAngleRot'], sim.angles[:, 0], atol=1e-5)
    np.testing.assert_allclose(particles['rlnOriginXAngst'], sim.shifts_px[:, 0] * 5.0, atol=1e-5)
    for column in ('rlnMaxValueProbDistribution', 'rlnNrOfSignificantSamples',
                   'rlnLogLikeliContribution', 'rlnNormCorrection'):
        assert column in particles.columns
    assert particles['rlnMaxValueProbDistribution'].between(0, 1).all()
    assert blocks['optics']['rlnImageSize'].tolist() == [24]

    model = read_star(project / f'Class3D/job085/run_it{N_ITER:03d}_model.star').blocks
    classes = model['model_classes']
    np.testing.assert_allclose(classes['rlnClassDistribution'],
                               np.bincount(labels, minlength=5)[1:] / len(labels), atol=1e-6)
    assert model['model_general']['rlnNrClasses'] == 4
    for k, reference in enumerate(classes['rlnReferenceImage'], 1):
        assert reference == f'Class3D/job085/run_it{N_ITER:03d}_class{k:03d}.mrc'
        with mrcfile.open(project / reference) as mrc:
            np.testing.assert_allclose(mrc.data, class_maps[k - 1], atol=1e-6)
            assert mrc.voxel_size.x == pytest.approx(5.0)
        assert len(model[f'model_class_{k}']) == 24 // 2 + 1


def test_assignments_converge_and_changes_match_the_data(job3d):
    project, _, labels, _ = job3d
    job = project / 'Class3D/job085'
    history = [read_particles_star(job / f'run_it{it:03d}_data.star').particles['rlnClassNumber']
               .to_numpy() for it in range(N_ITER + 1)]
    changes = []
    for it in range(1, N_ITER + 1):
        optimiser = read_star(job / f'run_it{it:03d}_optimiser.star').blocks['optimiser_general']
        expected = np.mean(history[it] != history[it - 1])
        assert optimiser['rlnChangesOptimalClasses'] == pytest.approx(expected, abs=1e-6)
        assert optimiser['rlnCurrentIteration'] == it
        assert optimiser['rlnExperimentalDataStarFile'] == \
            f'Class3D/job085/run_it{it:03d}_data.star'
        changes.append(expected)
    assert changes[0] > 0.3 and changes[-1] < changes[0]
    assert np.mean(history[0] == labels) < 0.5
    fractions = [np.mean(h == labels) for h in history]
    assert all(b >= a for a, b in zip(fractions[1:], fractions[2:]))
    assert fractions[-1] == 1.0


def test_job_star_and_note(job3d):
    project, _, _, _ = job3d
    job = read_star(project / 'Class3D/job085/job.star').blocks
    assert job['job'] == {'rlnJobType': 9, 'rlnJobIsContinue': 0}
    options = dict(zip(job['joboptions_values']['rlnJobOptionVariable'],
                       job['joboptions_values']['rlnJobOptionValue']))
    assert options['fn_img'] == 'Extract/job007/particles.star'
    assert str(options['nr_classes']) == '4' and str(options['nr_iter']) == str(N_ITER)
    note = (project / 'Class3D/job085/note.txt').read_text()
    assert '--K 4' in note and '--o Class3D/job085/run' in note


def test_class2d_job_and_continued_run(tmp_path, sim, maps):
    labels, directions = view_classes(sim.angles, 4, seed=1)
    averages = class_average_images(maps, sim.states, labels, directions)
    last = write_classification_job(tmp_path, 'Class2D/job008', particle_table(sim), labels,
                                    n_iterations=5, kind='2D', class_maps=averages,
                                    optics=sim.optics(), write_every=2, continue_from=3)
    job = tmp_path / 'Class2D/job008'
    assert last == job / 'run_ct3_it005_data.star'
    written = sorted(p.name for p in job.glob('*_data.star'))
    assert written == ['run_ct3_it004_data.star', 'run_ct3_it005_data.star',
                       'run_it000_data.star', 'run_it002_data.star', 'run_it003_data.star']
    particles = starfile.read(last, always_dict=True)['particles']
    np.testing.assert_array_equal(particles['rlnClassNumber'], labels)
    np.testing.assert_array_equal(particles['rlnAngleTilt'], 0.0)
    np.testing.assert_allclose(particles['rlnAnglePsi'], sim.angles[:, 2], atol=1e-5)
    model = starfile.read(job / 'run_ct3_it005_model.star', always_dict=True)
    references = model['model_classes']['rlnReferenceImage'].tolist()
    assert references == [f'{k:06d}@Class2D/job008/run_ct3_it005_classes.mrcs' for k in range(1, 5)]
    assert {'rlnClassPriorOffsetX', 'rlnClassPriorOffsetY'} <= set(model['model_classes'].columns)
    with mrcfile.open(job / 'run_ct3_it005_classes.mrcs') as mrc:
        np.testing.assert_allclose(mrc.data, averages, atol=1e-6)
    optimiser = read_star(job / 'run_ct3_it005_optimiser.star').blocks['optimiser_general']
    assert optimiser['rlnOutputRootName'] == 'Class2D/job008/run_ct3'
    assert read_star(job / 'job.star').blocks['job'] == {'rlnJobType': 8, 'rlnJobIsContinue': 1}
    assert '--continue Class2D/job008/run_it003_optimiser.star' in (job / 'note.txt').read_text()


def test_default_class_maps_and_input_errors(tmp_path, sim):
    table = particle_table(sim)
    labels = noisy_labels(sim.states, 3, seed=0)
    last = write_classification_job(tmp_path, 'Class3D/job001', table, labels, n_iterations=1,
                                    optics=sim.optics())
    with mrcfile.open(tmp_path / 'Class3D/job001/run_it001_class003.mrc') as mrc:
        assert mrc.data.shape == (24, 24, 24)
    assert last.exists()
    with pytest.raises(ValueError, match='labels'):
        write_classification_job(tmp_path, 'Class3D/job002', table, labels[:-1],
                                 optics=sim.optics())
    with pytest.raises(ValueError, match='optics'):
        write_classification_job(tmp_path, 'Class3D/job002', table, labels)
    with pytest.raises(ValueError, match='kind'):
        write_classification_job(tmp_path, 'Class3D/job002', table, labels, kind='1D',
                                 optics=sim.optics())


@requires_realdata
@pytest.mark.parametrize('kind, real_job', [('3D', 'Class3D/job016'), ('2D', 'Class2D/job013')])
def test_files_have_the_blocks_and_labels_relion_writes(tmp_path, sim, maps, kind, real_job):
    labels = noisy_labels(sim.states, 3, seed=0)
    if kind == '3D':
        class_maps = class_average_maps(maps, sim.states, labels, 3)
    else:
        labels, directions = view_classes(sim.angles, 3, seed=0)
        class_maps = class_average_images(maps, sim.states, labels, directions)
    write_classification_job(tmp_path, 'Class9/job001', particle_table(sim), labels,
                             n_iterations=1, kind=kind, class_maps=class_maps,
                             optics=sim.optics())
    for suffix in ('data', 'model', 'optimiser', 'sampling'):
        ours = read_star(tmp_path / f'Class9/job001/run_it001_{suffix}.star')
        real = read_star(REALDATA / real_job / f'run_it025_{suffix}.star')
        assert ours.version == real.version == '30001'
        real_names = [n for n in real.blocks if not n.startswith(('model_group_',
                                                                  'model_pdf_orient_'))
                      and n != 'sampling_directions']
        assert [n for n in ours.blocks if not n.startswith('model_class_')] == \
            [n for n in real_names if not n.startswith('model_class_')]
        for name, block in ours.blocks.items():
            real_block = real.blocks['model_class_1' if name.startswith('model_class_') else name]
            ours_labels = list(block.columns if isinstance(block, pd.DataFrame) else block)
            real_labels = list(real_block.columns if isinstance(real_block, pd.DataFrame)
                               else real_block)
            if name == 'particles':
                # Picking and CTF-fit scores are not simulated.
                real_labels = [c for c in real_labels if c not in (
                    'rlnAutopickFigureOfMerit', 'rlnCtfMaxResolution', 'rlnCtfFigureOfMerit')]
                assert set(real_labels) <= set(ours_labels)
            elif name == 'optics':
                assert set(ours_labels) == set(real_labels) - {'rlnMtfFileName'}
            else:
                assert ours_labels == real_labels, name
    ours_job = read_star(tmp_path / 'Class9/job001/job.star')
    real_job_star = read_star(REALDATA / real_job / 'job.star', blocks=['job', 'joboptions_values'])
    assert list(ours_job.blocks) == list(real_job_star.blocks)
    assert ours_job.blocks['job']['rlnJobType'] == real_job_star.blocks['job']['rlnJobType']
    real_options = real_job_star.blocks['joboptions_values']
    assert list(ours_job.blocks['joboptions_values'].columns) == list(real_options.columns)
