"""Streaming correlation (Gram matrix) and FSC of the map-clustering engine."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scipion_reciprocal.core.mapsim.grid import lowpass_filter, soft_sphere
from scipion_reciprocal.core.mapsim.similarity import (VectorStore, correlation_matrix,
                                                       fsc_crossing, fsc_curve, fsc_matrix,
                                                       fsc_similarity, gram_matrix)
from scipion_reciprocal.simulate.molecule import molecule_maps


@pytest.fixture(scope='module')
def noisy_maps():
    rng = np.random.default_rng(4)
    states = molecule_maps(3, box=24, pixel_size=4.0, seed=1)
    return [states[i % 3] + rng.normal(0, 0.3, states[0].shape).astype(np.float32)
            for i in range(9)]


def test_gram_streaming_equals_corrcoef(noisy_maps):
    brute = np.corrcoef(np.stack([m.ravel() for m in noisy_maps]).astype(np.float64))
    in_memory = correlation_matrix(noisy_maps)
    # A 20 kB budget forces the temporary file and 2 kB-wide slabs.
    on_disk = correlation_matrix(noisy_maps, memory_budget=20_000)
    np.testing.assert_allclose(in_memory, brute, atol=1e-5)
    np.testing.assert_allclose(on_disk, brute, atol=1e-5)


def test_masked_correlation_is_corrcoef_inside_a_binary_mask(noisy_maps):
    mask = (soft_sphere(24, radius=7) > 0.5).astype(np.float32)
    inside = mask.ravel() > 0
    brute = np.corrcoef(np.stack([m.ravel()[inside] for m in noisy_maps]).astype(np.float64))
    np.testing.assert_allclose(correlation_matrix(noisy_maps, mask, memory_budget=20_000), brute,
                               atol=1e-5)


def test_soft_mask_gives_the_weighted_pearson_correlation(noisy_maps):
    w = soft_sphere(24, radius=8, edge=6).ravel().astype(np.float64)
    a, b = (m.ravel().astype(np.float64) for m in noisy_maps[:2])
    am = a - np.sum(w * a) / w.sum()
    bm = b - np.sum(w * b) / w.sum()
    expected = np.sum(w * am * bm) / np.sqrt(np.sum(w * am ** 2) * np.sum(w * bm ** 2))
    got = correlation_matrix(noisy_maps[:2], soft_sphere(24, radius=8, edge=6))
    assert got[0, 1] == pytest.approx(expected, abs=1e-6)


def test_vector_store_file_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((5, 1000)).astype(np.float32)
    with VectorStore(5, 1000, memory_budget=100, workdir=tmp_path) as store:
        assert not store.in_memory and store.path.startswith(str(tmp_path))
        for i, v in enumerate(vectors):
            store.write(i, v)
        np.testing.assert_array_equal(store.columns(100, 350), vectors[:, 100:350])
        np.testing.assert_allclose(gram_matrix(store, memory_budget=5 * 12 * 1024),
                                   vectors.astype(np.float64) @ vectors.T.astype(np.float64),
                                   rtol=1e-5)
        path = store.path
    assert not list(tmp_path.iterdir()), f'{path} left behind'


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.floats(0.1, 10.0), st.floats(-5.0, 5.0)), min_size=3, max_size=3),
       st.integers(0, 2 ** 16))
def test_correlation_ignores_scale_and_offset(scales, seed):
    rng = np.random.default_rng(seed)
    maps = [rng.standard_normal((8, 8, 8)).astype(np.float32) for _ in range(3)]
    moved = [s * m + o for m, (s, o) in zip(maps, scales)]
    c1, c2 = correlation_matrix(maps), correlation_matrix(moved)
    np.testing.assert_allclose(c1, c2, atol=1e-4)
    np.testing.assert_allclose(c1, c1.T)
    np.testing.assert_array_equal(np.diag(c1), 1.0)


def test_fsc_of_a_map_with_itself_is_one():
    volume = molecule_maps(1, box=24, pixel_size=3.0, seed=0)[0]
    freqs, fsc = fsc_curve(volume, volume, 3.0)
    assert len(freqs) == 12 and freqs[-1] == pytest.approx(1 / 6.0)
    np.testing.assert_allclose(fsc, 1.0, atol=1e-6)
    freqs2, curves = fsc_matrix([volume, 2 * volume + 1], 3.0)
    np.testing.assert_allclose(curves, 1.0, atol=1e-6)


def test_fsc_with_noise_decreases_with_frequency_and_noise():
    rng = np.random.default_rng(1)
    volume = lowpass_filter(molecule_maps(1, box=32, pixel_size=3.0, seed=0)[0], 3.0, 8.0)
    signal = volume / volume.std()
    low_noise = [signal + rng.normal(0, 0.3, signal.shape) for _ in range(2)]
    high_noise = [signal + rng.normal(0, 1.0, signal.shape) for _ in range(2)]
    _, fsc_low = fsc_curve(*low_noise, 3.0)
    _, fsc_high = fsc_curve(*high_noise, 3.0)
    assert fsc_low[0] > 0.99 and fsc_low[-1] < 0.2          # signal dies at high frequency
    assert np.all(fsc_high[:8] < fsc_low[:8])
    assert fsc_low[:4].mean() > fsc_low[-4:].mean() + 0.5


def test_fsc_matrix_equals_pairwise_curves(noisy_maps):
    mask = soft_sphere(24)
    freqs, curves = fsc_matrix(noisy_maps[:4], 4.0, mask, memory_budget=30_000)
    for i, j in [(0, 1), (1, 3), (2, 3)]:
        f, c = fsc_curve(noisy_maps[i], noisy_maps[j], 4.0, mask)
        np.testing.assert_allclose(curves[i, j], c, atol=1e-6)
        np.testing.assert_allclose(freqs, f)


def test_fsc_crossing_interpolates():
    freqs = np.array([0.1, 0.2, 0.3, 0.4])
    curves = np.array([[1.0, 0.8, 0.1, 0.0],      # crosses 0.5 between 0.2 and 0.3
                       [1.0, 0.9, 0.8, 0.7],      # never: Nyquist
                       [0.4, 0.3, 0.2, 0.1]])     # below at once: first shell
    np.testing.assert_allclose(fsc_crossing(curves, freqs, 0.5),
                               [0.2 + 0.1 * 0.3 / 0.7, 0.4, 0.1])
    sim, res = fsc_similarity(np.stack([curves[:2], curves[1:]]), freqs, 'resolution', 0.5)
    np.testing.assert_allclose(np.diag(sim), 1.0)
    np.testing.assert_allclose(res[0, 0], 1 / (0.2 + 0.1 * 0.3 / 0.7))
    mean, _ = fsc_similarity(np.stack([curves[:2], curves[1:]]), freqs, 'mean', 0.5,
                             max_resolution=1 / 0.2)
    assert mean[0, 1] == pytest.approx((1.0 + 0.9) / 2)     # shells at 0.1 and 0.2 1/A
