"""Label files: one class label per particle, in the order of a particle file.

cryoDRGN's ``analyze`` writes ``kmeans<K>/labels.pkl`` (a pickled integer array, labels
``0..K-1``); RECOVAR's ``analyze`` writes ``data/kmeans_result.pkl`` (a pickled dict whose
``labels`` are the same). Plain ``.npy``, ``.txt`` and ``.csv`` files with one integer per
particle (a CSV may have a header; its last column is read) are read too.
"""
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import FormatError
from .recovar_results import RecovarResultError, load_pickle

__all__ = ['LabelFileError', 'read_labels', 'LABEL_SUFFIXES']

LABEL_SUFFIXES = ('.pkl', '.npy', '.txt', '.csv')


class LabelFileError(FormatError):
    """A label file that cannot be read as one integer label per particle."""


def read_labels(path):
    """The labels of a label file, as they are written (no offset applied).

    Returns
    -------
    numpy.ndarray of int64

    Raises
    ------
    LabelFileError
        If the file is missing, of an unknown kind, or does not hold one integer per
        particle (the message says what it holds).
    """
    path = Path(path)
    if not path.is_file():
        raise LabelFileError(path, 'label file not found')
    suffix = path.suffix.lower()
    if suffix == '.pkl':
        try:
            values = load_pickle(path)
        except RecovarResultError as exc:
            raise LabelFileError(path, exc.reason) from None
        if isinstance(values, dict):
            if 'labels' not in values:
                raise LabelFileError(path, f'a dict without "labels" (keys: '
                                           f'{", ".join(map(str, values))})')
            values = values['labels']
    elif suffix == '.npy':
        try:
            values = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise LabelFileError(path, f'unreadable numpy array: {exc}') from None
    elif suffix in ('.txt', '.csv'):
        values = _read_text(path)
    else:
        raise LabelFileError(path, f'unknown label file kind {suffix or "(no suffix)"} '
                                   f'(give {", ".join(LABEL_SUFFIXES)})')
    return _as_labels(path, values)


def _read_text(path):
    with open(path, errors='replace') as fh:
        first = fh.readline()
    try:
        frame = pd.read_csv(path, header=None, sep=',' if ',' in first else r'\s+',
                            comment='#', skip_blank_lines=True)
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise LabelFileError(path, f'unreadable text ({exc})') from None
    column = frame.iloc[:, -1]
    if len(column) and pd.to_numeric(column.iloc[:1], errors='coerce').isna().all():
        column = column.iloc[1:]            # a header line
    return pd.to_numeric(column, errors='coerce').to_numpy()


def _as_labels(path, values):
    try:
        array = np.asarray(values)
    except (TypeError, ValueError):
        raise LabelFileError(path, f'holds a {type(values).__name__}, not labels') from None
    if array.ndim == 2 and 1 in array.shape:
        array = array.ravel()
    if array.ndim != 1 or array.dtype.kind not in 'iuf' or len(array) == 0:
        raise LabelFileError(path, f'holds {array.dtype} values of shape {array.shape}: '
                                   f'expected one integer label per particle')
    if array.dtype.kind == 'f':
        bad = ~np.isfinite(array) | (np.mod(array, 1) != 0)
        if bad.any():
            raise LabelFileError(path, f'label {int(np.flatnonzero(bad)[0]) + 1} is not an '
                                       f'integer ({array[bad][0]})')
    return array.astype(np.int64)
