"""Which classes another run reproduces, which consensus groups are states, how stable each
particle is.

Definitions (run pairs are unordered; ``t`` is the Jaccard threshold, ``alpha`` the false
discovery rate):

- Class i of run a and class j of run b form a **reproduced pair** when each is the other's
  best match by Jaccard index (i's best in b is j and j's best in a is i), their intersection
  is significant (BH q-value <= alpha, see :mod:`.consensus_significance`) and their Jaccard
  index is at least ``t``.
- A class is **reproduced in** run b when it forms a reproduced pair with a class of b.
- A consensus group is a **reproducible state** when it is significant (q <= alpha), holds at
  least the minimum group size, and every two of its classes form a reproduced pair.
- The **stability** of a particle is the fraction of run pairs in which its two classes form
  a reproduced pair (1: every run put it in classes that reproduce each other).
"""

from itertools import combinations

import numpy as np
import pandas as pd

__all__ = ['mutual_best', 'reproduced_pairs', 'reproducibility_table', 'pairwise_reproduced',
           'group_stability', 'REPRODUCIBILITY_COLUMNS']

REPRODUCIBILITY_COLUMNS = ['job', 'class', 'size', 'reproduced_in', 'n_runs', 'best_matches',
                           'status']


def mutual_best(jaccard):
    """Cells whose row and column are each other's best match (first best on ties).

    Parameters
    ----------
    jaccard : array-like, shape (ka, kb)

    Returns
    -------
    numpy.ndarray of bool, shape (ka, kb)
    """
    jaccard = np.asarray(jaccard, dtype=np.float64)
    out = np.zeros(jaccard.shape, dtype=bool)
    if not jaccard.size:
        return out
    best_in_b = np.argmax(jaccard, axis=1)
    best_in_a = np.argmax(jaccard, axis=0)
    rows = np.arange(jaccard.shape[0])
    mutual = best_in_a[best_in_b] == rows
    out[rows[mutual], best_in_b[mutual]] = True
    return out


def reproduced_pairs(jaccard, q_value, jaccard_threshold, alpha):
    """Reproduced class pairs of two runs (see the module docstring).

    Parameters
    ----------
    jaccard, q_value : array-like, shape (ka, kb)
    jaccard_threshold, alpha : float

    Returns
    -------
    numpy.ndarray of bool, shape (ka, kb)
    """
    jaccard = np.asarray(jaccard, dtype=np.float64)
    return (mutual_best(jaccard) & (np.asarray(q_value) <= alpha)
            & (jaccard >= jaccard_threshold))


def reproducibility_table(names, classes, sizes, jaccard, reproduced):
    """One row per class of every run: how many other runs reproduce it.

    Parameters
    ----------
    names : list of str
        Runs in analysis order.
    classes, sizes : dict
        Run name -> class numbers, and their sizes.
    jaccard : callable
        ``jaccard(a, b)`` -> Jaccard matrix, classes of a x classes of b.
    reproduced : dict
        ``(a, b)`` -> reproduced pairs (bool matrix), for every ordered pair of runs.

    Returns
    -------
    pandas.DataFrame
        :data:`REPRODUCIBILITY_COLUMNS`: ``reproduced_in`` other runs out of ``n_runs``;
        ``best_matches`` the best Jaccard match in each other run (``job086:2;job087:1``;
        nothing after the colon for a class that shares no particle with that run);
        ``status`` ``'reproduced'`` (in every other run), ``'partly reproduced'`` or
        ``'not reproduced'``.
    """
    frames = []
    n_other = len(names) - 1
    for a in names:
        count = np.zeros(len(classes[a]), dtype=np.int64)
        matches = [[] for _ in classes[a]]
        for b in names:
            if a == b:
                continue
            jac = np.asarray(jaccard(a, b), dtype=np.float64).reshape(len(classes[a]),
                                                                      len(classes[b]))
            best = np.argmax(jac, axis=1) if len(classes[b]) else \
                np.zeros(len(classes[a]), dtype=np.int64)
            shares = jac.max(axis=1, initial=0.0) > 0       # an empty class matches nothing
            count += reproduced[(a, b)].any(axis=1)
            for i, k in enumerate(best):
                matches[i].append(f'{b}:{classes[b][k]}' if shares[i] else f'{b}:')
        status = np.where(count == n_other, 'reproduced',
                          np.where(count > 0, 'partly reproduced', 'not reproduced'))
        frames.append(pd.DataFrame({
            'job': a, 'class': classes[a], 'size': np.asarray(sizes[a], dtype=np.int64),
            'reproduced_in': count, 'n_runs': n_other,
            'best_matches': [';'.join(m) for m in matches], 'status': status}))
    return pd.concat(frames, ignore_index=True)[REPRODUCIBILITY_COLUMNS]


def pairwise_reproduced(tuples, reproduced, n_runs):
    """Per group, for every run pair (in ``combinations`` order), whether its two classes form
    a reproduced pair.

    Parameters
    ----------
    tuples : array-like of int, shape (groups, runs)
        Class index of every group in every run.
    reproduced : list
        Reproduced-pair matrices of the run pairs ``combinations(range(n_runs), 2)``, in that
        order (rows: the earlier run).
    n_runs : int

    Returns
    -------
    numpy.ndarray of bool, shape (groups, pairs)
    """
    tuples = np.asarray(tuples, dtype=np.int64)
    pairs = list(combinations(range(n_runs), 2))
    out = np.zeros((len(tuples), len(pairs)), dtype=bool)
    for p, ((a, b), matrix) in enumerate(zip(pairs, reproduced)):
        out[:, p] = np.asarray(matrix)[tuples[:, a], tuples[:, b]]
    return out


def group_stability(pairwise):
    """Stability of the particles of each group: the fraction of run pairs reproduced.

    Parameters
    ----------
    pairwise : numpy.ndarray of bool, shape (groups, pairs)
        From :func:`pairwise_reproduced`.
    """
    pairwise = np.asarray(pairwise, dtype=bool)
    if pairwise.shape[1] == 0:
        return np.ones(len(pairwise))
    return pairwise.mean(axis=1)
