"""What a user checks after importing a classification: class sizes, how sure the
assignments are, and the class maps or averages.

Three small tables, written by the import protocols and drawn by
:mod:`scipion_reciprocal.plotting.classes` (and the class-slice plots of
:mod:`scipion_reciprocal.plotting.reciprocal`):

- :func:`class_sizes`: ``class,size,fraction,mean_confidence`` (every class, empty ones
  included);
- :func:`confidence_histogram`: ``class,bin_start,bin_end,count`` (the posterior of the
  assigned class, cryoSPARC's ``class_posterior`` or RELION's
  ``rlnMaxValueProbDistribution``, in equal bins over [0, 1]);
- :func:`class_map_table`: the class maps in the layout of
  :func:`~scipion_reciprocal.core.relion_jobs.class_maps` (``class, reference, path, index,
  exists, distribution, resolution``), from a job's ``{class: (file, image)}``.
"""
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ['class_sizes', 'confidence_histogram', 'class_map_table', 'CONFIDENCE_BINS']

#: Bins of :func:`confidence_histogram` over [0, 1].
CONFIDENCE_BINS = 20


def class_sizes(classes, class_ids=None, confidence=None):
    """Particles per class.

    Parameters
    ----------
    classes : array-like of int
        Class of every particle (1-based).
    class_ids : array-like of int, optional
        Every class of the job (empty ones get a row of size 0).
    confidence : array-like of float, optional
        Posterior of every particle's class.

    Returns
    -------
    pandas.DataFrame
        ``class``, ``size``, ``fraction`` (of all particles), ``mean_confidence`` (NaN
        without confidences or for an empty class), in class order.
    """
    classes = np.asarray(classes, dtype=np.int64)
    ids = np.unique(classes) if class_ids is None else \
        np.union1d(np.unique(classes), np.asarray(class_ids, dtype=np.int64))
    position = np.searchsorted(ids, classes)
    size = np.bincount(position, minlength=len(ids))
    mean = np.full(len(ids), np.nan)
    if confidence is not None:
        total = np.bincount(position, weights=np.asarray(confidence, dtype=np.float64),
                            minlength=len(ids))
        filled = size > 0
        mean[filled] = total[filled] / size[filled]
    return pd.DataFrame({'class': ids, 'size': size,
                         'fraction': size / len(classes) if len(classes) else 0.0,
                         'mean_confidence': mean})


def confidence_histogram(classes, confidence, bins=CONFIDENCE_BINS, class_ids=None):
    """Per class, how many particles have their posterior in each of ``bins`` equal bins
    of [0, 1] (1 falls in the last bin; values outside [0, 1] are clipped to it).

    Returns
    -------
    pandas.DataFrame
        ``class``, ``bin_start``, ``bin_end``, ``count``: ``bins`` rows per class, classes
        in order (those of ``class_ids`` too).
    """
    classes = np.asarray(classes, dtype=np.int64)
    ids = np.unique(classes) if class_ids is None else \
        np.union1d(np.unique(classes), np.asarray(class_ids, dtype=np.int64))
    values = np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0)
    column = np.minimum((values * bins).astype(np.int64), bins - 1)
    counts = np.bincount(np.searchsorted(ids, classes) * bins + column,
                         minlength=len(ids) * bins)
    edges = np.arange(bins + 1) / bins
    return pd.DataFrame({'class': np.repeat(ids, bins), 'bin_start': np.tile(edges[:-1], len(ids)),
                         'bin_end': np.tile(edges[1:], len(ids)), 'count': counts})


def class_map_table(maps, sizes):
    """The class maps of a job as :func:`~.relion_jobs.class_maps` lists them.

    Parameters
    ----------
    maps : dict
        Class (1-based) -> ``(file, image)``: ``image`` None for a volume, else the 0-based
        image of a stack of class averages (as :meth:`.CsJob.class_maps` gives them).
    sizes : pandas.DataFrame
        :func:`class_sizes` of the job: its ``fraction`` is the class distribution.

    Returns
    -------
    pandas.DataFrame
        ``class``, ``reference`` (``k@file`` for an image of a stack), ``path``, ``index``
        (1-based image, 0 for a volume), ``exists``, ``distribution``, ``resolution`` (NaN):
        one row per class of ``sizes`` or ``maps``.
    """
    fraction = dict(zip(sizes['class'].astype(int), sizes['fraction'].astype(float)))
    rows = []
    for cls in sorted(set(fraction) | {int(k) for k in maps}):
        path, image = maps.get(cls, (None, None))
        index = 0 if image is None else int(image) + 1
        rows.append({'class': cls,
                     'reference': '' if path is None else (f'{index}@{path}' if index
                                                           else str(path)),
                     'path': None if path is None else Path(path), 'index': index,
                     'exists': path is not None and Path(path).is_file(),
                     'distribution': fraction.get(cls, 0.0), 'resolution': np.nan})
    return pd.DataFrame(rows, columns=['class', 'reference', 'path', 'index', 'exists',
                                       'distribution', 'resolution'])
