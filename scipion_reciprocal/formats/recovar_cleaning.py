"""Readers of RECOVAR 1.0.5's particle-cleaning results: ``junk_particle_detection`` and
``pipeline_with_outliers`` (layouts in ``docs/recovar-1.0.5.md``).

Rows are RECOVAR's rows of the input file (the order of the id map), or, for tilt series,
its particles (tilt groups, in the sorted order of ``rlnGroupName``). ``junk_particle_detection``
numbers the particles the pipeline embedded (left-out rows skipped); :func:`read_junk_detection`
turns them back into rows with the pipeline's half sets.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .recovar_results import RecovarResultError, load_pickle, read_subset_indices

__all__ = ['JUNK_INDICES_PKL', 'GOOD_INDICES_PKL', 'JUNK_RESULTS_PKL', 'ROUND_DIR', 'ROUND_INLIERS_PKL', 'ROUND_OUTLIERS_PKL', 'ALL_ROUNDS_PKL',
           'JunkDetection', 'read_junk_detection', 'junk_clusters', 'OutlierRounds',
           'round_dir', 'finished_rounds', 'last_round_dir', 'read_outlier_rounds']

#: ``junk_particle_detection -o OUT`` (``{zdim}`` is the embedding's dimension).
JUNK_INDICES_PKL = 'data/junk_indices_{zdim}.pkl'
GOOD_INDICES_PKL = 'data/good_indices_{zdim}.pkl'
#: Written only with ``--save-all-plots``: k-means labels and per-cluster FSC scores.
JUNK_RESULTS_PKL = 'data/junk_detection_results_{zdim}.pkl'
#: ``pipeline_with_outliers -o OUT``: a complete pipeline folder per round, and the rows
#: kept and removed by the outlier detection that ends each round.
ROUND_DIR = 'round_{k}'
ROUND_INLIERS_PKL = 'inliers_round_{k}.pkl'
ROUND_OUTLIERS_PKL = 'outliers_round_{k}.pkl'
ALL_ROUNDS_PKL = 'all_rounds_inliers.pkl'

def _require(path, what):
    path = Path(path)
    if not path.exists():
        raise RecovarResultError(path, f'{what} not found')
    return path


@dataclass
class JunkDetection:
    """Rows classified by ``junk_particle_detection``.

    Attributes
    ----------
    junk, good : numpy.ndarray
        Sorted int64 rows.
    clusters : pandas.DataFrame or None
        One row per k-means cluster (``--save-all-plots`` only): ``cluster``, ``size``,
        ``junk`` (bool), ``halfmap_resolution`` and ``vs_mean_resolution`` (Å, where the
        FSC of the cluster's two half maps, and of their average against the mean, falls
        below 1/7), ``halfmap_auc``, ``vs_mean_auc``.
    labels : numpy.ndarray or None
        ``(n_rows,)`` cluster of every row (-1: not embedded), ``--save-all-plots`` only.
    """

    junk: np.ndarray
    good: np.ndarray
    clusters: pd.DataFrame = None
    labels: np.ndarray = None


def _embedded_rows(halfsets, n_rows):
    """Rows the pipeline embedded, in RECOVAR's order (sorted), from its half sets."""
    if halfsets is None:
        return np.arange(n_rows, dtype=np.int64)
    rows = np.sort(np.concatenate([np.asarray(h, dtype=np.int64) for h in halfsets[:2]]))
    if n_rows is not None and rows.size and rows[-1] >= n_rows:
        raise RecovarResultError(f'the pipeline embedded row {int(rows[-1])} but the id map has '
                                 f'{n_rows} rows: the results belong to another particle set')
    return rows


def read_junk_detection(folder, zdim, halfsets=None, n_rows=None):
    """Junk and good rows of a ``junk_particle_detection`` folder.

    Parameters
    ----------
    folder : path
        The command's output folder.
    zdim : int
        The embedding it used (``--zdim``).
    halfsets : sequence of array-like, optional
        The pipeline's ``[rows of half 1, rows of half 2]`` (``read_halfsets``' source): the
        command numbers the embedded particles 0..n-1, which are these rows in sorted order.
        Omitted: every row was embedded.
    n_rows : int, optional
        Rows of the id map (or tilt-series particles).
    """
    folder = Path(folder)
    local = [read_subset_indices(_require(folder / name.format(zdim=int(zdim)), what))
             for name, what in ((JUNK_INDICES_PKL, 'junk indices'),
                                (GOOD_INDICES_PKL, 'good indices'))]
    embedded = _embedded_rows(halfsets, n_rows)
    size = sum(len(x) for x in local)
    if size != len(embedded):
        raise RecovarResultError(folder, f'{size} particles classified but the pipeline embedded '
                                         f'{len(embedded)}')
    junk, good = (np.sort(embedded[x]) for x in local)
    result = JunkDetection(junk=junk, good=good)
    results = folder / JUNK_RESULTS_PKL.format(zdim=int(zdim))
    if results.is_file():
        result.clusters, cluster_of = junk_clusters(results, junk_local=local[0])
        labels = np.full(n_rows if n_rows is not None else int(embedded.max()) + 1, -1, np.int64)
        labels[embedded] = cluster_of
        result.labels = labels
    return result


def junk_clusters(results_pkl, junk_local=None):
    """Per-cluster table and the cluster of every embedded particle, from
    ``junk_detection_results_<zdim>.pkl`` (see :class:`JunkDetection`).

    ``junk_local``: the junk particles (RECOVAR's numbering); a cluster is junk when its
    members are.
    """
    data = load_pickle(results_pkl)
    try:
        labels = np.asarray(data['cluster_indices'], dtype=np.int64)
        scores, aucs = data['fsc_scores'], data['fsc_auc_scores']
    except (KeyError, TypeError) as exc:
        raise RecovarResultError(results_pkl, f'not a junk detection result ({exc})') from None
    n = len(data.get('cluster_centers', [])) or int(labels.max()) + 1
    junk = np.zeros(len(labels), dtype=bool)
    if junk_local is not None:
        junk[np.asarray(junk_local, dtype=np.int64)] = True

    def resolution(frequency):
        frequency = float(np.asarray(frequency))
        return 1.0 / frequency if frequency > 0 else np.inf

    table = pd.DataFrame({
        'cluster': np.arange(n),
        'size': np.bincount(labels, minlength=n),
        'junk': [bool(junk[labels == k].any()) for k in range(n)],
        'halfmap_resolution': [resolution(scores[k]['halfmap_fsc']) for k in range(n)],
        'vs_mean_resolution': [resolution(scores[k]['vs_mean_fsc']) for k in range(n)],
        'halfmap_auc': [float(np.asarray(aucs[k]['halfmap_auc'])) for k in range(n)],
        'vs_mean_auc': [float(np.asarray(aucs[k]['vs_mean_auc'])) for k in range(n)],
    })
    return table, labels


# ------------------------------------------------------------------ pipeline with outliers

@dataclass
class OutlierRounds:
    """``pipeline_with_outliers`` rounds.

    Attributes
    ----------
    rounds : list of int
        Rounds that finished (1, 2, ...).
    inliers : list of numpy.ndarray
        Rows kept by the outlier detection of each round (sorted).
    removed_in : numpy.ndarray
        ``(n_rows,)`` the round that removed each row, 0 for rows kept to the end.
    last_pipeline : pathlib.Path
        The last round's pipeline folder (its embedding covers that round's input rows).
    """

    rounds: list
    inliers: list
    removed_in: np.ndarray
    last_pipeline: Path

    @property
    def kept(self):
        """Rows kept by every round."""
        return np.flatnonzero(self.removed_in == 0)

    @property
    def removed(self):
        """Rows removed by some round."""
        return np.flatnonzero(self.removed_in > 0)

    def removed_per_round(self):
        """Number of rows each round removed."""
        return [int(np.sum(self.removed_in == k)) for k in self.rounds]


def round_dir(folder, k):
    """The pipeline folder of round ``k`` (1, 2, ...)."""
    return Path(folder) / ROUND_DIR.format(k=int(k))


def finished_rounds(folder):
    """Rounds whose outlier detection finished (their inliers file exists), in order."""
    rounds = []
    while (Path(folder) / ROUND_INLIERS_PKL.format(k=len(rounds) + 1)).is_file():
        rounds.append(len(rounds) + 1)
    return rounds


def last_round_dir(folder):
    """The pipeline folder of the last finished round.

    Raises
    ------
    RecovarResultError
        If no round finished.
    """
    rounds = finished_rounds(folder)
    if not rounds:
        raise RecovarResultError(Path(folder) / ROUND_INLIERS_PKL.format(k=1),
                                 'not found: no round of pipeline_with_outliers finished')
    return _require(round_dir(folder, rounds[-1]), 'last round pipeline folder')


def read_outlier_rounds(folder, n_rows):
    """The rounds of a ``pipeline_with_outliers`` folder (see :class:`OutlierRounds`).

    Raises
    ------
    RecovarResultError
        If no round finished, or a round kept rows the previous round had removed.
    """
    folder = Path(folder)
    last = last_round_dir(folder)
    rounds, inliers = finished_rounds(folder), []
    for k in rounds:
        rows = read_subset_indices(folder / ROUND_INLIERS_PKL.format(k=k), n_rows)
        if inliers and np.setdiff1d(rows, inliers[-1]).size:
            raise RecovarResultError(folder / ROUND_INLIERS_PKL.format(k=k),
                                     'keeps rows that the previous round removed')
        inliers.append(rows)
    removed_in = np.zeros(n_rows, dtype=np.int64)
    previous = np.arange(n_rows)
    for k, rows in zip(rounds, inliers):
        removed_in[np.setdiff1d(previous, rows)] = k
        previous = rows
    return OutlierRounds(rounds=rounds, inliers=inliers, removed_in=removed_in,
                         last_pipeline=last)
