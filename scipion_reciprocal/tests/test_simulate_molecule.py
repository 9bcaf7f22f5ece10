"""The synthetic molecule, map rotation and RELION's CTF: exact values and conventions."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from scipion_reciprocal.simulate.ctf import ctf_2d, ctf_stack, electron_wavelength
from scipion_reciprocal.simulate.molecule import (FIT_FRACTION, molecule_blobs, molecule_maps,
                                                  render_blobs, rotate_map)


def centroid(volume):
    """Centre of mass (x, y, z) in pixels relative to the box centre."""
    z, y, x = np.indices(volume.shape) - volume.shape[0] // 2
    w = volume / volume.sum()
    return np.array([(w * x).sum(), (w * y).sum(), (w * z).sum()])


def test_maps_shape_dtype_and_determinism():
    maps = molecule_maps(n_states=3, box=32, pixel_size=4.0, seed=0)
    assert maps.shape == (3, 32, 32, 32) and maps.dtype == np.float32
    np.testing.assert_array_equal(maps, molecule_maps(3, 32, 4.0, seed=0))
    assert not np.allclose(maps, molecule_maps(3, 32, 4.0, seed=1))
    assert np.all(maps >= 0) and maps.max() > 1.0


def test_states_share_most_mass_but_differ():
    maps = molecule_maps(n_states=3, seed=0).reshape(3, -1).astype(np.float64)
    corr = np.corrcoef(maps)
    # Same core, moved arm (and an extra domain in state 1): similar, clearly not identical.
    assert np.all((corr[np.triu_indices(3, 1)] > 0.8) & (corr[np.triu_indices(3, 1)] < 0.97))
    blobs = molecule_blobs(3, seed=0)
    assert len(blobs[1]) > len(blobs[0]) == len(blobs[2])   # the extra domain in odd states


def test_molecule_fits_and_is_centred_and_asymmetric():
    for box, pixel_size in [(32, 4.0), (24, 4.0), (64, 2.0)]:
        blobs = molecule_blobs(3, box, pixel_size, seed=3)
        for b in blobs:
            outer = np.linalg.norm(b[:, :3], axis=1) + 2 * b[:, 3]
            assert outer.max() <= FIT_FRACTION * box / 2 + 1e-9
    maps = molecule_maps(1, 32, 4.0, seed=0)[0]
    assert np.linalg.norm(centroid(maps)) < 1.5
    # Asymmetric: unlike its inversion through the centre and its mirror images.
    for axes in [(0, 1, 2), (0,), (1,), (2,)]:
        mirrored = np.roll(np.flip(maps, axes), 1, axis=axes)  # coordinate c -> -c
        assert np.corrcoef(maps.ravel(), mirrored.ravel())[0, 1] < 0.9


def test_render_blob_peak_and_position():
    volume = render_blobs(np.array([[3.0, -2.0, 5.0, 1.5, 2.0]]), 32)
    z, y, x = np.unravel_index(volume.argmax(), volume.shape)
    assert (x - 16, y - 16, z - 16) == (3, -2, 5)
    assert volume.max() == pytest.approx(2.0)


@pytest.mark.parametrize('angles, shift', [((30, 60, -20), (0, 0, 0)),
                                           ((-100, 35, 80), (2, -1, 1.5))])
def test_rotate_map_moves_density_to_r_times_position_plus_shift(angles, shift):
    position = np.array([5.0, -3.0, 2.0])
    volume = render_blobs(np.array([[*position, 1.5, 1.0]]), 32)
    rotation = Rotation.from_euler('ZYZ', angles, degrees=True).as_matrix()
    moved = rotate_map(volume, rotation, shift)
    np.testing.assert_allclose(centroid(moved), rotation @ position + shift, atol=0.05)
    assert moved.sum() == pytest.approx(volume.sum(), rel=1e-3)


def test_electron_wavelength():
    assert electron_wavelength(300) == pytest.approx(0.019687, abs=1e-6)
    assert electron_wavelength(200) == pytest.approx(0.025079, abs=1e-6)


def test_ctf_value_at_origin_is_amplitude_contrast_and_phase_shift():
    assert ctf_2d(64, 2.0, 15000, 15000, 0)[0, 0] == pytest.approx(0.1)
    assert ctf_2d(64, 2.0, 15000, 15000, 0, amplitude_contrast=0.07)[0, 0] == pytest.approx(0.07)
    with_plate = ctf_2d(64, 2.0, 15000, 15000, 0, amplitude_contrast=0.1, phase_shift=90.0)
    assert with_plate[0, 0] == pytest.approx(np.sqrt(1 - 0.1 ** 2))
    # RELION's sign: positive at low frequency for underfocus, rising towards the first peak.
    row = ctf_2d(256, 1.0, 20000, 20000, 0)[0, :6]
    assert np.all(row > 0) and np.all(np.diff(row) > 0)


def test_ctf_first_zero_position():
    defocus, q0, box, apix = 20000.0, 0.1, 1024, 1.0
    row = ctf_2d(box, apix, defocus, defocus, 0, cs=0.0, amplitude_contrast=q0)[0]
    lam = electron_wavelength(300)
    k3 = np.arctan(q0 / np.sqrt(1 - q0 ** 2))
    s_zero = np.sqrt((np.pi - k3) / (np.pi * lam * defocus))
    first = np.flatnonzero(np.diff(np.sign(row)) != 0)[0]
    s = np.fft.rfftfreq(box, apix)
    assert s[first] <= s_zero <= s[first + 1]


def test_ctf_spherical_aberration_term():
    box, apix, defocus, cs = 128, 1.5, 12000.0, 2.7
    ctf = ctf_2d(box, apix, defocus, defocus, 0, cs=cs, amplitude_contrast=0.0)
    s = np.fft.rfftfreq(box, apix)
    lam = electron_wavelength(300)
    chi = np.pi * lam * defocus * s ** 2 - np.pi / 2 * cs * 1e7 * lam ** 3 * s ** 4
    np.testing.assert_allclose(ctf[0], np.sin(chi), atol=1e-12)


def test_ctf_astigmatism_axes():
    u, v = 18000.0, 14000.0
    astig = ctf_2d(64, 2.0, u, v, 0.0)
    np.testing.assert_allclose(astig[0], ctf_2d(64, 2.0, u, u, 0.0)[0])         # along x: U
    np.testing.assert_allclose(astig[:, 0], ctf_2d(64, 2.0, v, v, 0.0)[:, 0])   # along y: V
    turned = ctf_2d(64, 2.0, u, v, 90.0)
    np.testing.assert_allclose(turned[0], ctf_2d(64, 2.0, v, v, 0.0)[0])
    stack = ctf_stack(64, 2.0, [[u, v, 0.0], [u, v, 90.0]])
    np.testing.assert_allclose(stack, np.stack([astig, turned]))
