"""The particle classifier's files, read and written on the Scipion side, and figures of merit.

The classifier itself runs as a backend program in its own environment
(``backends/classifier/particle_classifier.py``); this module writes its input tables, reads
what it writes, and judges its results: ROC curves of particle scores, and picks matched
against true particle positions. Only numpy, pandas and scipy are used.

File layouts (the backend's contract)
-------------------------------------
Inputs
    ``particles.csv``: ``stack,index,label,pixel_size`` (1-based index; label 1 good, 0 bad;
    the label column is optional for ``predict``). ``micrographs.csv``: ``path,pixel_size,name``.
``train --out-dir DIR``
    ``model.keras``, ``model.json`` (working ``box``, ``pixel_size``, ``binning``,
    ``normalize``, ``class_names``, ``input`` groups, ``training`` settings, ``versions``),
    ``history.csv`` (``epoch,loss,acc,val_loss,val_acc,seconds``), ``test_report.json``,
    ``test_scores.csv`` (``row,label,score``), ``split.csv`` (``row,label,part``).
``predict --out FILE``
    ``row,score``: 0-based input row, probability of good.
``pick --out-dir DIR``
    ``picks.csv`` and optionally ``rejected.csv`` (``micrograph,x,y,score``; x, y in the
    micrograph's own pixels), ``pick.json`` (settings and, per micrograph, shapes, scale and
    counts), ``coordinates/<name>_classifier.star`` and optionally ``score_maps/<name>.npy``.
"""

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

# The backend's file names, stated once for both environments.
from ..backends.classifier.classifier_files import (  # noqa: F401 (re-exported)
    COORDINATES, HISTORY, MICROGRAPH_COLUMNS, MODEL_FILE, MODEL_INFO, PARTICLE_COLUMNS,
    PICK_COLUMNS, PICK_SUMMARY, PICKS, REJECTED, SCORE_MAPS, SPLIT, STAR_SUFFIX, TEST_REPORT,
    TEST_SCORES)



# ------------------------------------------------------------------------------ input tables

def write_particle_table(path, stacks, indices, pixel_sizes, labels=None):
    """Write the backend's particle table.

    Parameters
    ----------
    path : str or os.PathLike
        Output CSV.
    stacks : sequence of str
        MRC stack of each particle (relative paths are read from the backend's working
        directory).
    indices : sequence of int
        1-based image number within its stack.
    pixel_sizes : float or sequence of float
        Pixel size in Å (one value for all, or one per particle).
    labels : sequence of int, optional
        1 good, 0 bad (training); omitted for scoring.

    Returns
    -------
    pandas.DataFrame
        The table written.
    """
    table = pd.DataFrame({'stack': [str(s) for s in stacks],
                          'index': np.asarray(indices, dtype=np.int64)})
    if len(table) and table['index'].min() < 1:
        raise ValueError('particle indices are 1-based')
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
        if not np.all((labels == 0) | (labels == 1)):
            raise ValueError('labels must be 1 (good) or 0 (bad)')
        table['label'] = labels
    table['pixel_size'] = np.broadcast_to(np.asarray(pixel_sizes, dtype=np.float64), len(table))
    table.to_csv(path, index=False)
    return table


def write_micrograph_table(path, paths, pixel_sizes, names):
    """Write the backend's micrograph table ``path,pixel_size,name``.

    Names must be unique once made file-safe (:func:`file_stem`), since they name the
    coordinate and score-map files.

    Returns
    -------
    pandas.DataFrame
        The table written.
    """
    table = pd.DataFrame({'path': [str(p) for p in paths]})
    table['pixel_size'] = np.broadcast_to(np.asarray(pixel_sizes, dtype=np.float64), len(table))
    table['name'] = [str(n) for n in names]
    stems = table['name'].map(file_stem)
    if stems.duplicated().any():
        raise ValueError(f'micrograph names are not unique once made file-safe: '
                         f'{sorted(set(stems[stems.duplicated()]))[:3]}')
    table.to_csv(path, index=False)
    return table


def file_stem(name):
    """The backend's file-safe micrograph name (characters not in ``[A-Za-z0-9._-]`` -> ``_``)."""
    return re.sub(r'[^A-Za-z0-9._-]', '_', str(name)) or '_'


# ---------------------------------------------------------------------------------- outputs

def _model_folder(path):
    path = Path(path)
    return path if path.is_dir() else path.parent


def read_model_info(path):
    """``model.json`` of a trained model, from the model folder or its ``model.keras``."""
    with open(_model_folder(path) / MODEL_INFO, encoding='utf-8') as handle:
        return json.load(handle)


def read_history(path):
    """Per-epoch training history (``epoch, loss, acc, val_loss, val_acc, seconds``)."""
    return pd.read_csv(_model_folder(path) / HISTORY)


def read_test_report(path):
    """The held-out test set's figures (``test_report.json``) as a dict."""
    with open(_model_folder(path) / TEST_REPORT, encoding='utf-8') as handle:
        return json.load(handle)


def read_test_scores(path):
    """Held-out test particles: ``row`` (in the training table), ``label``, ``score``."""
    return pd.read_csv(_model_folder(path) / TEST_SCORES)


def read_scores(path, n_rows=None):
    """Scores written by ``predict``, as a float array in input order.

    Parameters
    ----------
    path : str or os.PathLike
        ``row,score`` CSV.
    n_rows : int, optional
        Expected number of particles; a mismatch raises ValueError naming the file.
    """
    table = pd.read_csv(path)
    if list(table.columns) != ['row', 'score']:
        raise ValueError(f'{path}: expected columns row,score, found {",".join(table.columns)}')
    if not np.array_equal(table['row'].to_numpy(), np.arange(len(table))):
        raise ValueError(f'{path}: rows are not 0..{len(table) - 1} in order')
    if n_rows is not None and len(table) != n_rows:
        raise ValueError(f'{path}: {len(table)} scores for {n_rows} particles')
    return table['score'].to_numpy(dtype=np.float64)


def read_picks(path):
    """Picks (or rejected peaks) of ``pick``: ``micrograph`` (str), ``x``, ``y``, ``score``.

    ``path`` is the CSV or the output folder (then ``picks.csv`` is read).
    """
    path = Path(path)
    if path.is_dir():
        path = path / PICKS
    table = pd.read_csv(path, dtype={'micrograph': str})
    if tuple(table.columns) != PICK_COLUMNS:
        raise ValueError(f'{path}: expected columns {",".join(PICK_COLUMNS)}, '
                         f'found {",".join(table.columns)}')
    return table


def read_pick_summary(out_dir):
    """``pick.json`` of a picking run (settings and per-micrograph shapes, scale, counts)."""
    with open(Path(out_dir) / PICK_SUMMARY, encoding='utf-8') as handle:
        return json.load(handle)


def read_score_map(out_dir, name):
    """A micrograph's score map and where its windows are centred.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Output folder of a ``pick --save-score-maps`` run.
    name : str
        Micrograph name as given in the micrograph table.

    Returns
    -------
    tuple
        ``(scores, y, x)``: ``(ny, nx)`` window scores, and the window centres' ``(ny,)`` y and
        ``(nx,)`` x coordinates in the micrograph's own pixels.
    """
    summary = read_pick_summary(out_dir)
    entry = next((m for m in summary['micrographs'] if m['name'] == str(name)), None)
    if entry is None or not entry.get('score_map'):
        raise ValueError(f'{out_dir}: no score map for micrograph {name!r}')
    scores = np.load(Path(out_dir) / entry['score_map'])
    centre = summary['box'] // 2
    stride = summary['stride']
    y = (np.arange(scores.shape[0]) * stride + centre) * entry['scale'][0]
    x = (np.arange(scores.shape[1]) * stride + centre) * entry['scale'][1]
    return scores, y, x


# ------------------------------------------------------------------------- figures of merit

def roc_curve(labels, scores):
    """ROC curve of scores against true labels (1 good, 0 bad).

    Returns
    -------
    tuple of numpy.ndarray
        ``(fpr, tpr, thresholds)``, starting at (0, 0) with threshold ``inf``; one point per
        distinct score, a particle being called good when its score is >= the threshold.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind='mergesort')
    sorted_scores, sorted_labels = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(scores) - 1]
    tp = np.cumsum(sorted_labels)[last]
    fp = (last + 1) - tp
    n_pos, n_neg = labels.sum(), (~labels).sum()
    tpr = np.r_[0.0, tp / n_pos] if n_pos else np.full(len(last) + 1, np.nan)
    fpr = np.r_[0.0, fp / n_neg] if n_neg else np.full(len(last) + 1, np.nan)
    return fpr, tpr, np.r_[np.inf, sorted_scores[last]]


def roc_auc(labels, scores):
    """Area under the ROC curve (ties count one half); NaN when a class is missing."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def confusion_matrix(labels, scores, threshold=0.5):
    """2x2 counts, rows true class and columns called class, both ordered bad, good."""
    labels = np.asarray(labels).astype(bool)
    called = np.asarray(scores) >= threshold
    return np.array([[np.sum(~labels & ~called), np.sum(~labels & called)],
                     [np.sum(labels & ~called), np.sum(labels & called)]], dtype=np.int64)


def split_by_threshold(scores, threshold=0.5):
    """Boolean mask of particles called good (score >= threshold)."""
    return np.asarray(scores, dtype=np.float64) >= threshold


def match_picks(picks_xy, true_xy, radius):
    """One-to-one matching of picks to true positions within a radius.

    The number of matched pairs is maximal and, among such matchings, their total distance
    is least (assignment problem).

    Parameters
    ----------
    picks_xy, true_xy : numpy.ndarray
        ``(n, 2)`` and ``(m, 2)`` positions.
    radius : float
        Largest distance of a match (inclusive).

    Returns
    -------
    tuple of numpy.ndarray
        ``(pick_index, true_index)`` of the matched pairs.
    """
    picks_xy = np.asarray(picks_xy, dtype=np.float64).reshape(-1, 2)
    true_xy = np.asarray(true_xy, dtype=np.float64).reshape(-1, 2)
    if not len(picks_xy) or not len(true_xy):
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    distance = np.hypot(*(picks_xy[:, None, :] - true_xy[None, :, :]).transpose(2, 0, 1))
    within = distance <= radius
    penalty = radius * (min(distance.shape) + 1) + 1.0
    rows, cols = linear_sum_assignment(np.where(within, distance, penalty))
    good = within[rows, cols]
    return rows[good], cols[good]


def evaluate_picks(picks, truth, radius):
    """Precision and recall of picks against true particle positions, per micrograph and overall.

    Parameters
    ----------
    picks, truth : pandas.DataFrame
        Columns ``micrograph``, ``x``, ``y`` in the same pixels and with the same micrograph
        keys (a micrograph absent from one table has no picks or no particles).
    radius : float
        A pick counts when it is matched one-to-one to a particle within this distance
        (usually half the box).

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1`` (None when undefined), ``n_picks``, ``n_true``,
        ``n_matched`` and ``per_micrograph`` (DataFrame with the counts and ratios).
    """
    rows = []
    keys = list(dict.fromkeys(list(truth['micrograph']) + list(picks['micrograph'])))
    for key in keys:
        p = picks.loc[picks['micrograph'] == key, ['x', 'y']].to_numpy(dtype=np.float64)
        t = truth.loc[truth['micrograph'] == key, ['x', 'y']].to_numpy(dtype=np.float64)
        matched = len(match_picks(p, t, radius)[0])
        rows.append({'micrograph': key, 'n_picks': len(p), 'n_true': len(t),
                     'n_matched': matched,
                     'precision': matched / len(p) if len(p) else np.nan,
                     'recall': matched / len(t) if len(t) else np.nan})
    table = pd.DataFrame(rows, columns=['micrograph', 'n_picks', 'n_true', 'n_matched',
                                        'precision', 'recall'])
    n_picks, n_true = int(table['n_picks'].sum()), int(table['n_true'].sum())
    n_matched = int(table['n_matched'].sum())
    precision = n_matched / n_picks if n_picks else None
    recall = n_matched / n_true if n_true else None
    f1 = (2 * precision * recall / (precision + recall)
          if precision and recall else None)
    return {'precision': precision, 'recall': recall, 'f1': f1, 'n_picks': n_picks,
            'n_true': n_true, 'n_matched': n_matched, 'per_micrograph': table}


def read_coordinates_star(path):
    """Read a ``<name>_classifier.star`` written by ``pick`` into ``x``, ``y``, ``score`` arrays.

    Only the simple single-loop layout the backend writes is understood.
    """
    labels, rows = [], []
    with open(path, encoding='utf-8') as handle:
        for line in handle:
            text = line.strip()
            if text.startswith('_rln'):
                labels.append(text.split()[0])
            elif text and labels and not text.startswith(('#', 'data_', 'loop_')):
                rows.append(text.split())
    data = np.array(rows, dtype=np.float64).reshape(-1, len(labels))
    column = {label: data[:, n] for n, label in enumerate(labels)}
    return (column['_rlnCoordinateX'], column['_rlnCoordinateY'],
            column['_rlnAutopickFigureOfMerit'])


def coordinates_star_path(out_dir, name):
    """Where ``pick`` writes the coordinate STAR file of micrograph ``name``."""
    return os.path.join(out_dir, COORDINATES, file_stem(name) + STAR_SUFFIX)
