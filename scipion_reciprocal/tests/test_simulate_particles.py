"""Simulated particles: RELION's projection, CTF and origin conventions, checked independently."""
import numpy as np
import pytest
import starfile
from scipy import ndimage

from scipion_reciprocal.formats.mrc import read_images
from scipion_reciprocal.formats.relion import parse_image_names
from scipion_reciprocal.formats.star import read_particles_star
from scipion_reciprocal.simulate.ctf import ctf_2d
from scipion_reciprocal.simulate.molecule import (molecule_blobs, molecule_maps, project_blobs,
                                                  render_blobs)
from scipion_reciprocal.simulate.particles import (FourierProjector, project_particles,
                                                   relion_matrices, simulate_particles,
                                                   write_particle_dataset)
from scipion_reciprocal.tests.references import relion_euler_matrix

ANGLES = np.array([[0.0, 0.0, 0.0], [30.0, 40.0, 50.0], [-120.0, 100.0, 20.0],
                   [75.0, 160.0, -45.0], [10.0, 90.0, 90.0]])


def peak_position(image):
    """Centre of mass (x, y) of an image of one blob, relative to the image centre."""
    w = np.where(image > 0.01 * image.max(), image, 0.0)
    y, x = np.indices(image.shape) - image.shape[0] // 2
    return np.array([(w * x).sum() / w.sum(), (w * y).sum() / w.sum()])


def real_space_projection(volume, matrix):
    """p(x, y) = sum over z of V(Aᵀ (x, y, z)) by direct interpolation (no Fourier transform)."""
    box = volume.shape[0]
    c = box // 2
    z, y, x = np.indices(volume.shape, dtype=np.float64) - c
    src = matrix.T @ np.stack([x.ravel(), y.ravel(), z.ravel()])
    values = ndimage.map_coordinates(volume, src[::-1] + c, order=3, mode='constant')
    return values.reshape(volume.shape).sum(axis=0)


@pytest.fixture(scope='module')
def maps():
    return molecule_maps(3, 32, 4.0, seed=0)


def test_euler_matrix_is_relions():
    for angles in ANGLES:
        np.testing.assert_allclose(relion_matrices(angles)[0], relion_euler_matrix(*angles),
                                   atol=1e-12)


def test_off_centre_blob_lands_at_a_times_r():
    position = np.array([6.0, -3.0, 4.0])
    volume = render_blobs(np.array([[*position, 1.3, 1.0]]), 32)
    images = FourierProjector(volume).project(relion_matrices(ANGLES))
    for image, angles in zip(images, ANGLES):
        expected = (relion_euler_matrix(*angles) @ position)[:2]
        np.testing.assert_allclose(peak_position(image), expected, atol=0.05)


def test_fourier_projection_matches_analytic_and_real_space_projections(maps):
    blobs = molecule_blobs(3, 32, 4.0, seed=0)
    matrices = relion_matrices(ANGLES)
    projector = FourierProjector(maps[2])
    images = projector.project(matrices)
    for image, matrix in zip(images, matrices):
        analytic = project_blobs(blobs[2], matrix, 32)
        assert np.corrcoef(image.ravel(), analytic.ravel())[0, 1] > 0.9999
        assert np.abs(image - analytic).max() < 0.01 * analytic.max()
    direct = real_space_projection(maps[2].astype(np.float64), matrices[2])
    assert np.corrcoef(images[2].ravel(), direct.ravel())[0, 1] > 0.999


def test_origin_shift_direction_and_exactness(maps):
    angles = np.array([[20.0, 70.0, -30.0]] * 2)
    centred = project_particles(maps, [0, 0], angles)
    shifted = project_particles(maps, [0, 0], angles, shifts_px=[[3.0, -2.0], [0.0, 0.0]])
    # RELION: the particle centre sits at the image centre minus the origin.
    np.testing.assert_allclose(shifted[0], np.roll(centred[0], (2, -3), axis=(0, 1)), atol=1e-10)
    np.testing.assert_allclose(shifted[1], centred[1], atol=1e-12)
    blob = render_blobs(np.array([[0.0, 0.0, 0.0, 1.3, 1.0]]), 32)[None]
    image = project_particles(blob, [0], [[0.0, 0.0, 0.0]], shifts_px=[[2.5, -1.5]])[0]
    np.testing.assert_allclose(peak_position(image), [-2.5, 1.5], atol=0.05)


def test_ctf_is_multiplied_in_fourier_space(maps):
    angles = np.array([[10.0, 50.0, 120.0]])
    defocus = np.array([[15000.0, 14000.0, 30.0]])
    plain = project_particles(maps, [1], angles)[0]
    with_ctf = project_particles(maps, [1], angles, defocus=defocus, pixel_size=4.0)[0]
    expected = np.fft.irfft2(np.fft.rfft2(plain) * ctf_2d(32, 4.0, 15000.0, 14000.0, 30.0),
                             s=(32, 32))
    np.testing.assert_allclose(with_ctf, expected, atol=1e-9 * np.abs(plain).max())


def test_simulate_particles_shapes_determinism_and_truth(maps):
    sim = simulate_particles(maps, 300, seed=4)
    assert sim.images.shape == (300, 32, 32) and sim.images.dtype == np.float32
    assert sim.states.shape == (300,) and set(np.unique(sim.states)) == {0, 1, 2}
    assert sim.angles.shape == (300, 3) and sim.shifts_px.shape == (300, 2)
    assert sim.defocus.shape == (300, 3)
    assert np.all(np.abs(sim.shifts_px) <= 2.0)
    assert np.all((sim.angles[:, 1] >= 0) & (sim.angles[:, 1] <= 180))
    again = simulate_particles(maps, 300, seed=4)
    np.testing.assert_array_equal(sim.images, again.images)
    np.testing.assert_array_equal(sim.angles, again.angles)
    other = simulate_particles(maps, 300, seed=5)
    assert not np.array_equal(sim.states, other.states)
    assert not np.allclose(sim.images, other.images)
    # Uniform orientations: beam directions average out.
    assert np.linalg.norm(sim.matrices[:, 2, :].mean(axis=0)) < 0.15
    md = sim.metadata
    np.testing.assert_allclose(md[['rlnAngleRot', 'rlnAngleTilt', 'rlnAnglePsi']], sim.angles)
    np.testing.assert_allclose(md[['rlnOriginXAngst', 'rlnOriginYAngst']], sim.shifts_px * 4.0)
    np.testing.assert_allclose(md[['rlnDefocusU', 'rlnDefocusV', 'rlnDefocusAngle']], sim.defocus)
    assert md['rlnRandomSubset'].tolist() == [1, 2] * 150
    assert not md.duplicated(['rlnMicrographName', 'rlnCoordinateX', 'rlnCoordinateY']).any()


def test_images_are_exact_projections_plus_noise_of_the_requested_snr(maps):
    probabilities = [0.5, 0.3, 0.2]
    clean = simulate_particles(maps, 200, probabilities, snr=np.inf, seed=2)
    noisy = simulate_particles(maps, 200, probabilities, snr=0.5, seed=2)
    expected = project_particles(maps, clean.states, clean.angles, clean.shifts_px,
                                 clean.defocus, 4.0)
    np.testing.assert_allclose(clean.images, expected, atol=1e-5)
    noise = noisy.images.astype(np.float64) - clean.images
    assert noise.var() == pytest.approx(clean.images.var(axis=(1, 2)).mean() / 0.5, rel=0.03)
    assert abs(noise.mean()) < 0.02 * noise.std()


def test_worker_processes_give_the_same_images(maps):
    """Batches projected in forked workers land in the right rows (several batches per state)."""
    sim = simulate_particles(maps, 90, snr=np.inf, seed=6)
    serial = project_particles(maps, sim.states, sim.angles, sim.shifts_px, sim.defocus, 4.0,
                               batch=7)
    forked = project_particles(maps, sim.states, sim.angles, sim.shifts_px, sim.defocus, 4.0,
                               batch=7, processes=3)
    np.testing.assert_array_equal(forked, serial)
    np.testing.assert_allclose(forked, sim.images, atol=1e-5)
    again = simulate_particles(maps, 90, snr=0.5, seed=6, processes=2)
    np.testing.assert_array_equal(again.images, simulate_particles(maps, 90, snr=0.5, seed=6).images)


def test_state_probabilities_are_followed(maps):
    sim = simulate_particles(maps, 2000, [0.6, 0.3, 0.1], snr=np.inf, seed=1)
    np.testing.assert_allclose(np.bincount(sim.states) / 2000, [0.6, 0.3, 0.1], atol=0.04)
    with pytest.raises(ValueError, match='state_probabilities'):
        simulate_particles(maps, 10, [0.5, 0.5])


def test_written_dataset_reads_back(tmp_path, maps):
    sim = simulate_particles(maps, 40, seed=3)
    star = write_particle_dataset(tmp_path, sim, stack_name='Extract/job099/parts.mrcs',
                                  star_name='Extract/job099/parts.star')
    assert star == tmp_path / 'Extract/job099/parts.star'
    blocks = starfile.read(star, always_dict=True)
    optics, particles = blocks['optics'], blocks['particles']
    assert set(optics.columns) == {
        'rlnOpticsGroupName', 'rlnOpticsGroup', 'rlnMicrographOriginalPixelSize', 'rlnVoltage',
        'rlnSphericalAberration', 'rlnAmplitudeContrast', 'rlnImagePixelSize', 'rlnImageSize',
        'rlnImageDimensionality'}
    assert optics.loc[0, 'rlnImageSize'] == 32 and optics.loc[0, 'rlnImagePixelSize'] == 4.0
    for column in ('rlnCoordinateX', 'rlnCoordinateY', 'rlnImageName', 'rlnMicrographName',
                   'rlnOpticsGroup', 'rlnDefocusU', 'rlnDefocusV', 'rlnDefocusAngle',
                   'rlnPhaseShift', 'rlnCtfBfactor', 'rlnAngleRot', 'rlnAngleTilt',
                   'rlnAnglePsi', 'rlnOriginXAngst', 'rlnOriginYAngst', 'rlnGroupNumber',
                   'rlnRandomSubset'):
        assert column in particles.columns
    np.testing.assert_allclose(particles['rlnOriginXAngst'], sim.shifts_px[:, 0] * 4.0, atol=1e-5)
    np.testing.assert_allclose(particles['rlnAngleTilt'], sim.angles[:, 1], atol=1e-5)

    ours = read_particles_star(star)
    indices, paths = parse_image_names(ours.particles['rlnImageName'])
    assert indices.tolist() == list(range(1, 41))
    assert set(paths) == {'Extract/job099/parts.mrcs'}
    np.testing.assert_array_equal(read_images(tmp_path / paths[0], indices[::-1]),
                                  sim.images[::-1])


def test_add_junk_replaces_a_fraction_by_noise_boxes():
    from scipion_reciprocal.simulate.particles import add_junk
    maps = molecule_maps(n_states=2, box=16, pixel_size=6.0, seed=0)
    sim = simulate_particles(maps, n_particles=50, pixel_size=6.0, snr=1.0, seed=2)
    junk = add_junk(sim, 0.2, seed=3)
    rows = np.flatnonzero(junk.states < 0)
    assert len(rows) == 10 and np.all(sim.states >= 0)
    kept = np.setdiff1d(np.arange(50), rows)
    np.testing.assert_array_equal(junk.images[kept], sim.images[kept])
    np.testing.assert_array_equal(junk.states[kept], sim.states[kept])
    # Noise of the particles' variance, unrelated to the particles it replaced.
    assert junk.images[rows].std() == pytest.approx(sim.images[kept].std(), rel=0.1)
    assert abs(np.corrcoef(junk.images[rows].ravel(), sim.images[rows].ravel())[0, 1]) < 0.1
    assert junk.metadata.equals(sim.metadata)
    with pytest.raises(ValueError):
        add_junk(sim, 1.0)
