"""Hierarchical clustering, choice of k and MDS for map clustering."""
import numpy as np
import pytest
from scipy.spatial.distance import pdist, squareform

from scipion_reciprocal.core.mapsim.clustering import (cluster_maps, distance_from_similarity,
                                                       mds_embedding)
from scipion_reciprocal.core.mapsim.errors import MapClusteringError


@pytest.fixture(scope='module')
def three_groups():
    # Points on a line: groups {0, 1, 2} near 0, {3, 4} near 20, {5, 6, 7} near 40.
    x = np.array([0.0, 0.5, 1.0, 20.0, 20.4, 40.0, 40.3, 41.0])[[0, 3, 5, 1, 4, 6, 2, 7]]
    return squareform(pdist(x[:, None])), np.array([1, 2, 3, 1, 2, 3, 1, 3])


@pytest.mark.parametrize('linkage', ['average', 'complete', 'ward'])
@pytest.mark.parametrize('method', ['silhouette', 'elbow'])
def test_auto_k_finds_the_three_groups(three_groups, linkage, method):
    distance, truth = three_groups
    result = cluster_maps(distance, linkage=linkage, n_clusters='auto', k_method=method)
    assert result.k == 3 and result.k_method == method
    np.testing.assert_array_equal(result.labels, truth)      # numbered by first appearance
    table = result.k_table
    assert list(table['k']) == list(range(2, 8))
    chosen = table.set_index('k').loc[3]
    score = chosen['silhouette'] if method == 'silhouette' else chosen['acceleration']
    assert result.k_score == pytest.approx(score)
    assert result.linkage.shape == (7, 4)
    heights = np.sort(result.linkage[:, 2])
    assert heights[-3] < result.cut_height < heights[-2]
    if method == 'elbow':
        d = heights[::-1]
        assert result.k_score == pytest.approx(d[1] - 2 * d[2] + d[3])


def test_silhouette_of_the_chosen_k_by_hand(three_groups):
    distance, truth = three_groups
    result = cluster_maps(distance, n_clusters=3)
    assert result.k_method == 'fixed'
    a = np.array([distance[i, truth == truth[i]].sum() / (np.sum(truth == truth[i]) - 1)
                  for i in range(8)])
    b = np.array([min(distance[i, truth == k].mean() for k in set(truth) - {truth[i]})
                  for i in range(8)])
    assert result.k_score == pytest.approx(np.mean((b - a) / np.maximum(a, b)))


def test_fixed_k_and_errors(three_groups):
    distance, _ = three_groups
    two = cluster_maps(distance, n_clusters=2)
    np.testing.assert_array_equal(two.labels, [1, 1, 2, 1, 1, 2, 1, 2])
    assert cluster_maps(distance, n_clusters=8).k == 8
    with pytest.raises(MapClusteringError, match='between 1 and 8'):
        cluster_maps(distance, n_clusters=9)
    with pytest.raises(MapClusteringError, match='linkage'):
        cluster_maps(distance, linkage='single')
    with pytest.raises(MapClusteringError, match='at least 3 maps'):
        cluster_maps(distance[:2, :2], n_clusters='auto')
    with pytest.raises(MapClusteringError, match="integer or 'auto'"):
        cluster_maps(distance, n_clusters='three')


def test_distance_from_similarity():
    sim = np.array([[1.0, 0.9, 0.2], [0.8, 1.0, 0.3], [0.2, 0.3, 0.99]])
    d = distance_from_similarity(sim)
    np.testing.assert_allclose(d, [[0, 0.15, 0.8], [0.15, 0, 0.7], [0.8, 0.7, 0]])


def test_mds_keeps_distances_and_is_reproducible(three_groups):
    distance, _ = three_groups
    coords, stress = mds_embedding(distance, random_state=0)
    again, _ = mds_embedding(distance, random_state=0)
    np.testing.assert_array_equal(coords, again)
    # Points on a line embed without distortion.
    np.testing.assert_allclose(squareform(pdist(coords)), distance, atol=0.05 * distance.max())
    pair, _ = mds_embedding(np.array([[0.0, 2.0], [2.0, 0.0]]))
    assert np.linalg.norm(pair[0] - pair[1]) == pytest.approx(2.0)


def test_mds_of_distances_breaking_the_triangle_inequality():
    # 1 - correlation of three RECOVAR centre volumes (the demo): 0.0118 + 0.0093 < 0.0213.
    distance = np.array([[0.0, 0.011793, 0.021259], [0.011793, 0.0, 0.009341],
                         [0.021259, 0.009341, 0.0]])
    coords, stress = mds_embedding(distance, random_state=0)
    assert np.isfinite(coords).all() and np.isfinite(stress)
    # The best the plane can do: the points nearly on a line, end to end about 0.0213.
    np.testing.assert_allclose(squareform(pdist(coords)), distance, atol=1e-3)
