"""How far class intersections and consensus groups exceed chance.

Null model: each classification is a random partition of the ``n`` shared particles with its
observed class sizes, independent of the others (every assignment of particles to classes of
those sizes equally likely).

- Intersection of class ``i`` of run a (size ``s_a``) and class ``j`` of run b (size ``s_b``):
  expected ``s_a s_b / n``; the shared count is hypergeometric, and the p-value is its exact
  upper tail ``P(X >= observed)``, the value of ``scipy.stats.hypergeom.sf(observed - 1, n,
  s_a, s_b)``, computed by :func:`hypergeom_upper_tail` (SciPy 1.10's takes about a
  millisecond per value for n between 10,000 and 110,000).
- Consensus group (one class per run, ``observed`` particles in all of them): expected
  ``n * prod_r(s_r / n)`` under independence. Its p-value is exact and conditional: for every
  run r, the group's count given ``m_r``, the number of particles in the group's classes of
  all the other runs, is hypergeometric when run r is independent of the others, with upper
  tail ``hypergeom.sf(observed - 1, n, m_r, s_r)``; the group's p-value is the largest of
  these over the runs. It is valid under independence (each term is), and small only when
  every run's class is enriched among the particles the other runs put together: a group
  that only one run's noise created is not significant. With two runs it is the
  intersection's p-value.

q-values are Benjamini-Hochberg adjusted p-values (false discovery rate).
"""

import numpy as np
import pandas as pd
from scipy.special import gammaln

__all__ = ['hypergeom_upper_tail', 'benjamini_hochberg', 'intersection_significance',
           'significance_table', 'group_significance', 'SIGNIFICANCE_COLUMNS']

SIGNIFICANCE_COLUMNS = ['job1', 'job2', 'class1', 'class2', 'observed', 'expected',
                        'enrichment', 'p_value', 'q_value']


#: Terms summed at a time by :func:`hypergeom_upper_tail`.
_BLOCK = 64


def _log_pmf(k, total, good, draws):
    """log P(X = k) of the hypergeometric distribution (``good`` of ``total`` items marked,
    ``draws`` drawn)."""
    def log_choose(a, b):
        return gammaln(a + 1.0) - gammaln(b + 1.0) - gammaln(a - b + 1.0)
    return (log_choose(good, k) + log_choose(total - good, draws - k)
            - log_choose(total, draws))


def _tail_sums(start, total, good, draws, upward):
    """Sum of the pmf from ``start`` away from the mode (up or down) until the terms no longer
    change the sum; terms by the ratio of consecutive pmf values, ``_BLOCK`` at a time."""
    sums = np.zeros(len(start))
    if not len(start):
        return sums
    term = np.exp(_log_pmf(start, total, good, draws))
    sums += term
    k = start.astype(np.float64)
    active = np.flatnonzero(term > 0)
    steps = np.arange(_BLOCK, dtype=np.float64)
    while len(active):
        ks = k[active, None] + (steps if upward else -steps)
        g, d, t = good[active, None], draws[active, None], total[active, None]
        if upward:      # pmf(k + 1) / pmf(k)
            ratio = (g - ks) * (d - ks) / ((ks + 1.0) * (t - g - d + ks + 1.0))
        else:           # pmf(k - 1) / pmf(k)
            ratio = ks * (t - g - d + ks) / ((g - ks + 1.0) * (d - ks + 1.0))
        terms = term[active, None] * np.cumprod(np.maximum(ratio, 0.0), axis=1)
        sums[active] += terms.sum(axis=1)
        term[active] = terms[:, -1]
        k[active] += _BLOCK if upward else -_BLOCK
        active = active[term[active] > sums[active] * 1e-18]
    return sums


def hypergeom_upper_tail(observed, total, good, draws):
    """``P(X >= observed)`` for a hypergeometric X: ``total`` items, ``good`` of them marked,
    ``draws`` drawn (the value of ``scipy.stats.hypergeom.sf(observed - 1, total, good,
    draws)``), vectorised.

    Above the mode the terms from ``observed`` up are summed; at or below it, 1 minus the
    terms from ``observed - 1`` down. Either way the terms fall off from the first one, and
    the sum stops when they no longer change it (relative 1e-18).

    Parameters
    ----------
    observed, total, good, draws : array-like of int
        Broadcast together.

    Returns
    -------
    numpy.ndarray of float
    """
    arrays = np.broadcast_arrays(*(np.asarray(a, dtype=np.int64)
                                   for a in (observed, total, good, draws)))
    shape = arrays[0].shape
    x, total, good, draws = (a.ravel().astype(np.float64) for a in arrays)
    lowest = np.maximum(0.0, good + draws - total)
    highest = np.minimum(good, draws)
    out = np.where(x <= lowest, 1.0, 0.0)
    inside = (x > lowest) & (x <= highest)
    mode = np.floor((good + 1.0) * (draws + 1.0) / (total + 2.0))
    upper = np.flatnonzero(inside & (x > mode))
    lower = np.flatnonzero(inside & (x <= mode))
    out[upper] = _tail_sums(x[upper], total[upper], good[upper], draws[upper], True)
    out[lower] = 1.0 - _tail_sums(x[lower] - 1.0, total[lower], good[lower], draws[lower],
                                  False)
    return np.clip(out, 0.0, 1.0).reshape(shape)


def benjamini_hochberg(p_values):
    """Benjamini-Hochberg q-values: ``q_(i) = min_{k >= i} m p_(k) / k``, at most 1.

    Parameters
    ----------
    p_values : array-like of float
        Any shape; NaN is not allowed.

    Returns
    -------
    numpy.ndarray
        q-values in the shape and order of ``p_values``.
    """
    p = np.asarray(p_values, dtype=np.float64)
    flat = p.ravel()
    m = flat.size
    if not m:
        return p.copy()
    if np.isnan(flat).any():
        raise ValueError('p-values must not be NaN')
    order = np.argsort(flat, kind='stable')
    scaled = flat[order] * m / np.arange(1, m + 1)
    q_sorted = np.minimum.accumulate(scaled[::-1])[::-1]
    q = np.empty(m)
    q[order] = np.minimum(q_sorted, 1.0)
    return q.reshape(p.shape)


def _enrichment(observed, expected):
    """observed / expected; NaN where nothing is expected (an empty class)."""
    observed = np.asarray(observed, dtype=np.float64)
    out = np.full(np.broadcast(observed, expected).shape, np.nan)
    np.divide(observed, expected, out=out, where=np.asarray(expected) > 0)
    return out


def intersection_significance(counts, n=None):
    """Expected counts, enrichment and exact p-values of a count matrix of two runs.

    Parameters
    ----------
    counts : array-like of int
        Classes of run a x classes of run b, shared particles.
    n : int, optional
        Particles of the analysis; default ``counts.sum()``.

    Returns
    -------
    expected, enrichment, p_value : numpy.ndarray
        Same shape as ``counts``; enrichment is NaN for a cell of an empty class.
    """
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum()) if n is None else int(n)
    size_a = counts.sum(axis=1)[:, None]
    size_b = counts.sum(axis=0)[None, :]
    expected = size_a * size_b / max(n, 1)
    p_value = hypergeom_upper_tail(counts, n, size_a, size_b)
    return expected, _enrichment(counts, expected), np.clip(p_value, 0.0, 1.0)


def significance_table(names, numbers, classes, count_matrix, n):
    """Long table of every class pair of every pair of runs, with BH q-values over all cells.

    Parameters
    ----------
    names : list of str
        Runs in analysis order; each unordered pair appears once, the earlier run first.
    numbers : dict
        Run name -> number written in ``job1``/``job2``.
    classes : dict
        Run name -> class numbers (rows/columns of the count matrices).
    count_matrix : callable
        ``count_matrix(a, b)`` -> classes of a x classes of b.
    n : int
        Particles of the analysis.

    Returns
    -------
    pandas.DataFrame
        :data:`SIGNIFICANCE_COLUMNS`.
    """
    frames = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            counts = count_matrix(a, b)
            expected, enrichment, p_value = intersection_significance(counts, n)
            c1, c2 = np.meshgrid(classes[a], classes[b], indexing='ij')
            frames.append(pd.DataFrame({
                'job1': numbers[a], 'job2': numbers[b], 'class1': c1.ravel(),
                'class2': c2.ravel(), 'observed': np.asarray(counts).ravel(),
                'expected': expected.ravel(), 'enrichment': enrichment.ravel(),
                'p_value': p_value.ravel()}))
    table = pd.concat(frames, ignore_index=True) if frames else \
        pd.DataFrame(columns=SIGNIFICANCE_COLUMNS[:-1])
    table['q_value'] = benjamini_hochberg(table['p_value'].to_numpy(dtype=np.float64))
    return table[SIGNIFICANCE_COLUMNS]


def group_significance(tuples, sizes, class_sizes, n):
    """Expected size, enrichment, p-value and q-value of every consensus group.

    Parameters
    ----------
    tuples : array-like of int, shape (groups, runs)
        Class index (0-based position in the run's class list) of every group in every run;
        every group observed in the analysis, each once.
    sizes : array-like of int, shape (groups,)
        Particles in the group.
    class_sizes : list of array-like
        Per run, the size of each class (indexed by the class index).
    n : int
        Particles of the analysis.

    Returns
    -------
    pandas.DataFrame
        ``expected``, ``enrichment``, ``p_value``, ``q_value`` (BH over the groups given), and
        ``weakest_run``: the position of the run whose conditional test gave the p-value.
    """
    tuples = np.asarray(tuples, dtype=np.int64)
    sizes = np.asarray(sizes, dtype=np.int64)
    n_groups, n_runs = tuples.shape
    class_sizes = [np.asarray(s, dtype=np.int64) for s in class_sizes]
    own = np.column_stack([class_sizes[r][tuples[:, r]] for r in range(n_runs)]) \
        if n_groups else np.zeros((0, n_runs), dtype=np.int64)
    expected = n * np.prod(own / max(n, 1), axis=1) if n_groups else np.zeros(0)
    p_runs = np.empty((n_groups, n_runs))
    for r in range(n_runs):
        # particles in the group's classes of every other run: the sizes of the groups
        # that differ from this one at most in run r
        key = _row_codes(np.delete(tuples, r, axis=1))
        rest = np.rint(np.bincount(key, weights=sizes)[key]).astype(np.int64) \
            if n_groups else np.zeros(0, dtype=np.int64)
        p_runs[:, r] = hypergeom_upper_tail(sizes, n, rest, own[:, r])
    p_runs = np.clip(p_runs, 0.0, 1.0)
    weakest = np.argmax(p_runs, axis=1) if n_groups else np.zeros(0, dtype=np.int64)
    p_value = p_runs[np.arange(n_groups), weakest]
    return pd.DataFrame({'expected': expected, 'enrichment': _enrichment(sizes, expected),
                         'p_value': p_value, 'q_value': benjamini_hochberg(p_value),
                         'weakest_run': weakest})


def _row_codes(rows):
    """One integer per distinct row of a 2D integer array (equal rows, equal codes)."""
    if not len(rows):
        return np.zeros(0, dtype=np.int64)
    span = rows.max(axis=0).astype(np.int64) + 1
    if np.prod(span.astype(np.float64)) < 2 ** 62:
        code = np.zeros(len(rows), dtype=np.int64)
        for column, width in zip(rows.T, span):
            code = code * width + column
        return pd.factorize(code)[0].astype(np.int64)
    return pd.MultiIndex.from_arrays(rows.T).factorize()[0].astype(np.int64)
