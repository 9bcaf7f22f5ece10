"""Map checks, Fourier resampling, low-pass and normalisation of the map-clustering engine."""
import numpy as np
import pytest

from scipion_reciprocal.core.mapsim.errors import MapClusteringError
from scipion_reciprocal.core.mapsim.grid import (central_slices, check_map, check_mask,
                                                 commensurate_box, fourier_resize, lowpass_filter,
                                                 normalise, pad_or_crop, resample_map,
                                                 soft_sphere, weighted_stats)
from scipion_reciprocal.simulate.molecule import molecule_blobs, molecule_maps, render_blobs


def corr(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def centroid(volume):
    z, y, x = np.indices(volume.shape) - volume.shape[0] // 2
    w = np.clip(volume, 0, None)
    w = w / w.sum()
    return np.array([(w * x).sum(), (w * y).sum(), (w * z).sum()])


def test_fourier_round_trip_keeps_content_and_voxel_size():
    volume = molecule_maps(1, box=64, pixel_size=1.0, seed=2)[0]
    small, voxel = resample_map(volume, 1.0, 32, 2.0)
    assert small.shape == (32, 32, 32) and voxel == pytest.approx(2.0)
    back, voxel_back = resample_map(small, voxel, 64, 1.0)
    assert back.shape == (64, 64, 64) and voxel_back == pytest.approx(1.0)
    # What survives the trip is everything below the 2 Å grid's Nyquist (4 Å).
    reference = lowpass_filter(volume, 1.0, 4.5)
    assert corr(lowpass_filter(back, 1.0, 4.5), reference) > 0.99
    # Values keep their scale and the molecule stays where it was.
    assert small.max() == pytest.approx(volume.max(), rel=0.15)
    np.testing.assert_allclose(centroid(small) * 2.0, centroid(volume), atol=0.15)


def test_fourier_resize_of_a_blob_matches_the_blob_rendered_on_the_new_grid():
    blob = np.array([[3.0, -2.0, 1.0, 3.0, 1.0]])           # x, y, z, sigma, amplitude (px)
    fine = render_blobs(blob, 48)
    coarse = fourier_resize(fine, 24)
    half = blob.copy()
    half[:, :4] /= 2.0
    np.testing.assert_allclose(coarse, render_blobs(half, 24), atol=2e-3)


def test_odd_box_keeps_the_centre():
    blob = np.array([[0.0, 0.0, 0.0, 2.0, 1.0]])
    odd = render_blobs(blob, 33)
    resized = fourier_resize(odd, 26)
    assert np.unravel_index(np.argmax(resized), resized.shape) == (13, 13, 13)


def test_non_integer_ratio_is_padded_to_a_whole_number_of_voxels():
    n0, m0, voxel = commensurate_box(40, 1.3, 2.0)
    assert n0 * 1.3 / m0 == pytest.approx(2.0, rel=1e-3) and n0 >= 40
    blobs = molecule_blobs(1, box=40, pixel_size=1.3, seed=1)[0]
    volume = render_blobs(blobs, 40)
    out, reached = resample_map(volume, 1.3, 32, 2.0)
    assert out.shape == (32, 32, 32) and reached == pytest.approx(2.0, rel=1e-3)
    scaled = blobs.copy()
    scaled[:, :4] *= 1.3 / 2.0
    assert corr(out, render_blobs(scaled, 32)) > 0.98


def test_pad_or_crop_centres():
    volume = np.zeros((5, 5, 5), np.float32)
    volume[2, 2, 2] = 1.0
    padded = pad_or_crop(volume, 8, fill=-1.0)
    assert padded[4, 4, 4] == 1.0 and padded[0, 0, 0] == -1.0
    assert pad_or_crop(padded, 5)[2, 2, 2] == 1.0


def test_lowpass_removes_high_and_keeps_low_frequencies():
    n, voxel = 32, 2.0
    x = np.arange(n)
    low = np.cos(2 * np.pi * 2 * x / n)                 # 32 Å period
    high = np.cos(2 * np.pi * 10 * x / n)               # 6.4 Å period
    volume = np.broadcast_to((low + high)[None, None, :], (n, n, n)).astype(np.float32)
    filtered = lowpass_filter(volume, voxel, 10.0)
    np.testing.assert_allclose(filtered[0, 0], low, atol=1e-5)
    with pytest.raises(MapClusteringError, match='positive'):
        lowpass_filter(volume, voxel, 0.0)


def test_normalise_inside_a_soft_mask():
    rng = np.random.default_rng(0)
    volume = rng.normal(5.0, 3.0, (24, 24, 24)).astype(np.float32)
    weights = soft_sphere(24, radius=8)
    out = normalise(volume, weights)
    mean, std = weighted_stats(out, weights)
    assert mean == pytest.approx(0.0, abs=1e-5) and std == pytest.approx(1.0, rel=1e-5)
    mean, std = weighted_stats(normalise(volume), None)
    assert mean == pytest.approx(0.0, abs=1e-5) and std == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize('volume, message', [
    (np.zeros((8, 8, 8)), 'all values are zero'),
    (np.ones((8, 8, 10)), 'not cubic'),
    (np.full((8, 8, 8), np.nan), 'NaN'),
    (np.ones((8, 8)), '3D'),
    (np.ones((8, 8, 8)), 'constant'),
])
def test_bad_maps_are_named(volume, message):
    with pytest.raises(MapClusteringError, match=message) as info:
        check_map(volume, 'class_003.mrc')
    assert 'class_003.mrc' in str(info.value)


def test_inf_is_refused():
    volume = np.ones((8, 8, 8))
    volume[1, 2, 3] = np.inf
    with pytest.raises(MapClusteringError, match='1 NaN or infinite'):
        check_map(volume, 'x')


def test_mask_checks():
    good = check_mask((soft_sphere(16) > 0.5).astype(np.uint8), 16, 'mask.mrc')
    assert good.dtype == np.float32 and set(np.unique(good)) == {0.0, 1.0}
    with pytest.raises(MapClusteringError, match='mask.mrc: size 20 x 20 x 20 differs'):
        check_mask(np.ones((20, 20, 20)), 16, 'mask.mrc')
    with pytest.raises(MapClusteringError, match=r'values must lie in \[0, 1\]'):
        check_mask(np.full((16, 16, 16), 2.0), 16, 'mask.mrc')
    with pytest.raises(MapClusteringError, match='empty'):
        check_mask(np.zeros((16, 16, 16)), 16, 'mask.mrc')
    with pytest.raises(MapClusteringError, match='voxel size'):
        check_mask(np.ones((16, 16, 16)), 16, 'mask.mrc', voxel_size=2.0, grid_voxel_size=3.0)


def test_central_slices_orientation():
    volume = np.zeros((6, 6, 6), np.float32)
    volume[3, 1, 4] = 1.0      # z = 3 (centre), y = 1, x = 4
    xy, xz, yz = central_slices(volume)
    assert xy[1, 4] == 1.0 and xz.sum() == 0.0 and yz.sum() == 0.0
