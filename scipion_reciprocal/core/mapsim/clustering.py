"""Hierarchical clustering of maps from a distance matrix, choice of k, and an MDS embedding.

Ward linkage assumes Euclidean distances. ``1 - correlation`` is not one (``sqrt(2 (1 - r))``
is, for unit vectors), so Ward on it is a heuristic: merge heights are not variances and can
be non-monotonic. Average and complete linkage make no such assumption.
"""
import inspect
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform

from .errors import MapClusteringError

#: The automatic choice of k compares k = 2 .. n - 1 (the knee of the merge heights).
MIN_MAPS_AUTO = 3

LINKAGES = ('average', 'complete', 'ward')
K_METHODS = ('silhouette', 'elbow')


@dataclass
class Clustering:
    """Result of :func:`cluster_maps`.

    Attributes
    ----------
    linkage : numpy.ndarray
        ``(n - 1, 4)`` scipy linkage matrix.
    labels : numpy.ndarray
        Cluster of each map, 1..k, numbered in order of first appearance among the maps.
    k : int
        Number of clusters.
    k_method : str
        ``fixed``, ``silhouette`` or ``elbow``.
    k_score : float
        Score of the chosen k under ``k_method`` (NaN when fixed and undefined).
    k_table : pandas.DataFrame
        One row per candidate k: ``k, silhouette, cut_height, height_gap, acceleration``.
    cut_height : float
        A height at which cutting the dendrogram gives the k clusters.
    leaves : list of int
        Map indices in dendrogram order.
    """
    linkage: np.ndarray
    labels: np.ndarray
    k: int
    k_method: str
    k_score: float
    k_table: pd.DataFrame
    cut_height: float
    leaves: list


def distance_from_similarity(similarity):
    """``1 - similarity``, symmetric, zero on the diagonal, never negative."""
    similarity = np.asarray(similarity, dtype=float)
    distance = 1.0 - (similarity + similarity.T) / 2.0
    np.fill_diagonal(distance, 0.0)
    return np.maximum(distance, 0.0)


def _labels_for(linkage, k):
    """Labels 1..k from cutting the tree into k clusters, numbered by first appearance."""
    # cut_tree follows the merge order, so ties in merge height still give exactly k clusters.
    raw = hierarchy.cut_tree(linkage, n_clusters=k).ravel()
    mapping = {}
    for label in raw:
        mapping.setdefault(label, len(mapping) + 1)
    return np.array([mapping[label] for label in raw], dtype=int)


def _silhouette(distance, labels):
    from sklearn.metrics import silhouette_score
    k = len(np.unique(labels))
    if k < 2 or k > len(labels) - 1:
        return np.nan
    return float(silhouette_score(distance, labels, metric='precomputed'))


def cluster_maps(distance, linkage='average', n_clusters='auto', k_method='silhouette',
                 max_clusters=10):
    """Cluster maps hierarchically from their distance matrix.

    Parameters
    ----------
    distance : numpy.ndarray
        ``(n, n)`` symmetric distances, zero diagonal.
    linkage : {'average', 'complete', 'ward'}
        Linkage criterion (see the module note on Ward).
    n_clusters : int or 'auto'
        Number of clusters, or ``auto`` to choose it by ``k_method`` among 2..``max_clusters``.
    k_method : {'silhouette', 'elbow'}
        ``silhouette``: the k with the best mean silhouette (precomputed distances).
        ``elbow``: the k with the largest acceleration of the merge heights: with heights
        sorted from the top, ``d_1 >= d_2 >= ...``, k maximises ``d_{k-1} - 2 d_k + d_{k+1}``
        (the heights drop steeply down to the cut into k clusters, then level off).
    max_clusters : int
        Largest k tried by ``auto`` (at most n - 1).

    Returns
    -------
    Clustering
    """
    distance = np.asarray(distance, dtype=float)
    n = distance.shape[0]
    if n < 2:
        raise MapClusteringError(f'clustering needs at least 2 maps, got {n}')
    if linkage not in LINKAGES:
        raise MapClusteringError(f'linkage must be one of {", ".join(LINKAGES)}, got {linkage!r}')
    if k_method not in K_METHODS:
        raise MapClusteringError(f'k method must be one of {", ".join(K_METHODS)}, '
                                 f'got {k_method!r}')
    tree = hierarchy.linkage(squareform(distance, checks=False), method=linkage)
    heights = tree[:, 2]
    leaves = [int(i) for i in hierarchy.leaves_list(tree)]

    descending = np.concatenate([np.sort(heights)[::-1], [0.0, 0.0]])

    def cut_height(k):
        # k clusters remain after the first n - k merges: cut between d_k and d_(k-1).
        upper = descending[k - 2] if k >= 2 else descending[0]
        lower = descending[k - 1]
        return (lower + upper) / 2.0, upper - lower

    def acceleration(k):
        if k < 2:
            return np.nan
        return descending[k - 2] - 2.0 * descending[k - 1] + descending[k]

    if n_clusters == 'auto':
        if n < MIN_MAPS_AUTO:
            raise MapClusteringError('choosing the number of clusters automatically needs at '
                                     'least %d maps; give the number of clusters' % MIN_MAPS_AUTO)
        if max_clusters < 2:
            raise MapClusteringError(f'the largest number of clusters tried (max_clusters) must '
                                     f'be at least 2, got {max_clusters}')
        candidates = list(range(2, min(max_clusters, n - 1) + 1))
    else:
        try:
            k_fixed = int(n_clusters)
        except (TypeError, ValueError):
            raise MapClusteringError(f"number of clusters must be an integer or 'auto', got "
                                     f"{n_clusters!r}") from None
        if not 1 <= k_fixed <= n:
            raise MapClusteringError(f'number of clusters must be between 1 and {n} (the number '
                                     f'of maps), got {k_fixed}')
        candidates = [k_fixed]
    rows = []
    for k in candidates:
        labels = _labels_for(tree, k)
        height, gap = cut_height(k)
        rows.append({'k': k, 'silhouette': _silhouette(distance, labels), 'cut_height': height,
                     'height_gap': gap, 'acceleration': acceleration(k)})
    table = pd.DataFrame(rows, columns=['k', 'silhouette', 'cut_height', 'height_gap',
                                        'acceleration'])
    if n_clusters == 'auto':
        column = 'silhouette' if k_method == 'silhouette' else 'acceleration'
        scores = table[column].to_numpy(dtype=float)
        best = int(np.nanargmax(scores)) if np.isfinite(scores).any() else 0
        k, method, score = int(table['k'][best]), k_method, float(scores[best])
    else:
        k, method = candidates[0], 'fixed'
        score = float(table['silhouette'][0])
    labels = _labels_for(tree, k)
    height, _ = cut_height(k)
    return Clustering(linkage=tree, labels=labels, k=int(len(np.unique(labels))),
                      k_method=method, k_score=score, k_table=table, cut_height=float(height),
                      leaves=leaves)


def mds_embedding(distance, random_state=0):
    """2D metric MDS of a precomputed distance matrix.

    Parameters
    ----------
    distance : numpy.ndarray
        ``(n, n)`` distances.
    random_state : int
        Seed, for reproducible coordinates.

    Returns
    -------
    coords : numpy.ndarray
        ``(n, 2)`` coordinates.
    stress : float
        Final stress reported by scikit-learn.
    """
    from sklearn.manifold import MDS
    distance = np.asarray(distance, dtype=float)
    if distance.shape[0] < 3:
        # Two maps: the embedding is the segment between them.
        d = distance[0, 1] if distance.shape[0] == 2 else 0.0
        coords = np.array([[-d / 2.0, 0.0], [d / 2.0, 0.0]])[:distance.shape[0]]
        return coords, 0.0
    params = inspect.signature(MDS).parameters
    if 'metric_mds' in params:
        model = MDS(n_components=2, metric_mds=True, metric='precomputed', init='classical_mds',
                    n_init=1, random_state=random_state)
    else:
        model = MDS(n_components=2, metric=True, dissimilarity='precomputed', n_init=1,
                    random_state=random_state, normalized_stress='auto')
    # SMACOF started from our own classical MDS: scikit-learn's takes the square root of
    # negative eigenvalues (NaN) when the distances break the triangle inequality, as
    # 1 - correlation of three nearly identical maps can.
    coords = model.fit_transform(distance, init=classical_mds(distance))
    return coords, float(model.stress_)


def classical_mds(distance, n_components=2):
    """Torgerson's classical scaling of a distance matrix; negative eigenvalues (distances
    that are not Euclidean) count as 0."""
    n = len(distance)
    centring = np.eye(n) - 1.0 / n
    gram = -0.5 * centring @ (np.asarray(distance, dtype=float) ** 2) @ centring
    values, vectors = np.linalg.eigh(gram)
    top = np.argsort(values)[::-1][:n_components]
    return vectors[:, top] * np.sqrt(np.clip(values[top], 0.0, None))
