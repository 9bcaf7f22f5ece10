"""Hierarchical merging of consensus groups by how their particles move between classes.

Two classes of one run are alike when their particles go to the same classes of the other
runs beyond chance. For class k of run a and class j of run b, the **excess flow**
``e_kj = max(0, f_kj - s_j / n)`` is how much the fraction ``f_kj`` of k's particles in j
exceeds j's share of all particles (what a class of random particles would send there). The
**flow similarity** of classes k and l of run a is the mean, over the other runs, of
``sum_j min(e_kj, e_lj) / max(sum_j e_kj, sum_j e_lj)``: 1 when both send their excess to
the same classes in the same amounts, 0 when their excesses go to different classes. A state
split in two by one run gives two classes of flow similarity near 1; classes of different
states, and a class of random particles (junk) against any other, near 0.

When every run has class maps, their Pearson correlations (within the run, whose maps share
one frame) are rescaled per run so that the least correlated pair of classes gets 0 and
identical maps 1, and averaged with the flow similarity.

The distance of two consensus groups is 1 minus the mean over runs of the similarity of
their classes (0 for the same class). Groups are merged by average linkage (UPGMA). The
suggested cut is at the **largest gap** between consecutive merge heights, the heights
taken together with 0 (no merge) and 1 (the largest possible distance): a gap above every
merge merges everything, a gap below every merge keeps every group.
"""

from dataclasses import dataclass, field

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

__all__ = ['flow_similarity', 'map_similarity', 'map_correlations', 'group_distances',
           'merge_groups', 'MergeResult', 'CUT_CRITERION']

CUT_CRITERION = 'largest gap between merge heights (with 0 and 1 as bounds)'


def flow_similarity(names, classes, count_matrix):
    """Per run, the flow similarity of every two of its classes (see the module docstring).

    Parameters
    ----------
    names : list of str
    classes : dict
        Run name -> class numbers.
    count_matrix : callable
        ``count_matrix(a, b)`` -> classes of a x classes of b.

    Returns
    -------
    dict
        Run name -> (k, k) matrix with 1 on the diagonal.
    """
    out = {}
    for a in names:
        k = len(classes[a])
        total = np.zeros((k, k))
        others = [b for b in names if b != a]
        for b in others:
            counts = np.asarray(count_matrix(a, b), dtype=np.float64)
            size = counts.sum(axis=1, keepdims=True)
            fractions = np.divide(counts, size, out=np.zeros_like(counts), where=size > 0)
            share = counts.sum(axis=0) / max(counts.sum(), 1.0)
            excess = np.maximum(fractions - share[None, :], 0.0) * (size > 0)
            shared = np.minimum(excess[:, None, :], excess[None, :, :]).sum(axis=2)
            largest = np.maximum(excess.sum(axis=1)[:, None], excess.sum(axis=1)[None, :])
            total += np.divide(shared, largest, out=np.zeros_like(shared), where=largest > 0)
        similarity = total / max(len(others), 1)
        np.fill_diagonal(similarity, 1.0)
        out[a] = np.clip(similarity, 0.0, 1.0)
    return out


def map_correlations(volumes, mask_radius=None):
    """Pearson correlations of maps of one run within a centred sphere.

    Parameters
    ----------
    volumes : list of numpy.ndarray
        Maps (or 2D class averages) of one shape.
    mask_radius : float, optional
        In pixels; default half the box.

    Returns
    -------
    numpy.ndarray, shape (k, k)
    """
    stack = np.stack([np.asarray(v, dtype=np.float64) for v in volumes])
    shape = stack.shape[1:]
    radius = min(shape) / 2.0 if mask_radius is None else float(mask_radius)
    grids = np.meshgrid(*[np.arange(s) - (s - 1) / 2.0 for s in shape], indexing='ij')
    inside = sum(g ** 2 for g in grids) <= radius ** 2
    values = stack[:, inside]
    values = values - values.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(values, axis=1)
    norms[norms == 0] = 1.0
    values /= norms[:, None]
    return np.clip(values @ values.T, -1.0, 1.0)


def map_similarity(correlations):
    """Rescale one run's map correlations: 0 for its least correlated pair, 1 for identity."""
    c = np.asarray(correlations, dtype=np.float64)
    k = len(c)
    if k < 2:
        return np.ones((k, k))
    lowest = c[~np.eye(k, dtype=bool)].min()
    if lowest >= 1.0:
        return np.ones((k, k))
    similarity = np.clip(1.0 - (1.0 - c) / (1.0 - lowest), 0.0, 1.0)
    np.fill_diagonal(similarity, 1.0)
    return similarity


def group_distances(tuples, similarities):
    """Distance of every two groups: 1 - mean over runs of the similarity of their classes.

    Parameters
    ----------
    tuples : array-like of int, shape (groups, runs)
        Class index of each group in each run.
    similarities : list of numpy.ndarray
        Per run (in the order of the columns), its class similarity matrix.

    Returns
    -------
    numpy.ndarray, shape (groups, groups)
    """
    tuples = np.asarray(tuples, dtype=np.int64)
    n_groups, n_runs = tuples.shape
    total = np.zeros((n_groups, n_groups))
    for r in range(n_runs):
        column = tuples[:, r]
        total += np.asarray(similarities[r])[column[:, None], column[None, :]]
    distances = 1.0 - total / max(n_runs, 1)
    np.fill_diagonal(distances, 0.0)
    return np.clip(distances, 0.0, 1.0)


@dataclass
class MergeResult:
    """Merged groups of :func:`merge_groups`.

    Attributes
    ----------
    labels : numpy.ndarray of int
        Merged group of each input group, 1 for the merged group with most particles.
    linkage : numpy.ndarray, shape (groups - 1, 4)
        SciPy linkage matrix (average linkage); empty for fewer than two groups.
    cut : float
        Height of the cut: merges at or below it are made.
    criterion : str
        How the cut was chosen.
    """

    labels: np.ndarray
    linkage: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    cut: float = 0.0
    criterion: str = CUT_CRITERION

    @property
    def n_merged(self):
        """Number of merged groups."""
        return int(self.labels.max(initial=0))


def merge_groups(distances, sizes, cut=None):
    """Average-linkage merging of groups, cut at the largest gap or at a given height.

    Parameters
    ----------
    distances : array-like, shape (groups, groups)
        Symmetric, zero diagonal, values in [0, 1].
    sizes : array-like of int
        Particles of each group (merged groups are numbered by size, largest first).
    cut : float, optional
        Merge everything joined at a height up to this; default: the largest gap.

    Returns
    -------
    MergeResult
    """
    distances = np.asarray(distances, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.int64)
    n = len(sizes)
    criterion = CUT_CRITERION if cut is None else 'fixed distance'
    if n < 2:
        return MergeResult(np.ones(n, dtype=np.int64), cut=0.0 if cut is None else float(cut),
                           criterion=criterion)
    tree = linkage(squareform(distances, checks=False), method='average')
    heights = np.maximum.accumulate(np.clip(tree[:, 2], 0.0, 1.0))
    if cut is None:
        levels = np.concatenate(([0.0], heights, [1.0]))
        gap = int(np.argmax(np.diff(levels)))
        cut = (levels[gap] + levels[gap + 1]) / 2.0
    labels = fcluster(tree, t=float(cut), criterion='distance').astype(np.int64)
    totals = np.bincount(labels, weights=sizes)
    order = np.lexsort((np.arange(len(totals)), -totals))      # largest first, then first seen
    order = order[np.isin(order, labels)]
    renumber = np.zeros(len(totals), dtype=np.int64)
    renumber[order] = np.arange(1, len(order) + 1)
    return MergeResult(renumber[labels], linkage=tree, cut=float(cut), criterion=criterion)
