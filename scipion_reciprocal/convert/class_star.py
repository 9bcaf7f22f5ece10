"""Write Scipion SetOfClasses files as RELION STAR files, or read their items, in worker
processes.

Converting a classification of a million particles costs seconds of CPU (SQLite reads, matrix
texts, number formatting), all under Python's one interpreter lock; reading only its
particle keys, a second.  The classifications of one analysis are independent, so
:class:`StarConversions` converts (or reads) each in a process of its own, as many at once as
the protocol's threads allow.  Workers get plain values (file names,
:class:`~.particles.ImagesInfo`) and return the item columns the caller keeps (the particle
keys), so that no set is read twice.

Memory: one class's raw rows are converted at a time; the converted columns of the whole set
are then put in item-id order one column at a time, and written without a string per row
(:class:`~..formats.star.ImageNames`).
"""
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .particles import (IMAGE_INDEX, IMAGE_PATH, ConversionError, ImagesInfo,
                        parse_matrix_lines, relion_columns, split_optics)
from . import set_sql
from .classes import sorted_class_items
from .set_sql import iter_class_items, read_class_matrix_lines
from .star_source import imported_items
from ..formats.star import ImageNames, StarTable, write_particles_star

MATRIX = "_transform._matrix"


def write_classes_star(classes_file, info, star_path, attributes, keep=("id", "classId"),
                       with_ctf=True):
    """Write every enabled item of a SetOfClasses file as one RELION STAR file: rows in item
    id order, ``rlnClassNumber`` = the item's class in this set, one width per column (see
    :func:`~..formats.star.write_star`).  ``attributes`` are the item attributes to read (those the items lack
    are left out).  Returns (a DataFrame of the item columns named in ``keep`` that the
    items have, rows in the same order, seconds taken)."""
    start = time.time()
    info = ImagesInfo.of(info)
    # The stored RELION class number is replaced by the class in this set: not read.
    # Matrices are read as one text per class (see read_class_matrix_lines).
    with_matrices = MATRIX in attributes
    attributes = [a for a in dict.fromkeys(list(attributes) + list(keep))
                  if a not in ("_rlnClassNumber", MATRIX, "id", "classId")]
    tables, kept = [], []
    for items in iter_class_items(classes_file, attributes, skip_missing=True):
        matrices = _class_matrices(classes_file, items) if with_matrices else None
        table = relion_columns(items, info, with_ctf=with_ctf, image_names=False,
                               matrices=matrices)
        table["rlnClassNumber"] = items["classId"].to_numpy()
        tables.append(table)
        kept.append(items[[c for c in keep if c in items.columns]])
    order = np.argsort(np.concatenate([t["scipionId"].to_numpy() for t in tables]),
                       kind="stable")
    columns = sorted_columns(tables, order)
    del columns["scipionId"]
    particles, optics = split_optics(_with_image_names(columns))
    write_particles_star(star_path, particles, optics)
    return pd.DataFrame(sorted_columns(kept, order)), time.time() - start


@dataclass
class SetRead:
    """What :func:`read_classes` found: ``kind`` ``'import'`` (the set still holds the
    rows of its RELION job's STAR file, ``source``), ``'star'`` (converted to ``source``) or
    ``'keys'`` (only read: no source); the items (sorted by id), the seconds taken, and why
    an import's rows could not be used (None when they could, or for other sets).  The
    source is a closed StarTable whose rows are found (it maps its file again to be used)."""
    kind: str
    items: pd.DataFrame
    seconds: float
    source: StarTable = None
    reason: str = None


@dataclass
class Conversion:
    """Arguments of :func:`write_classes_star` for a set read by :func:`read_classes`."""
    info: ImagesInfo
    star_path: str
    attributes: tuple
    with_ctf: bool = True


def read_classes(classes_file, attributes, imported=None, conversion=None):
    """Read a SetOfClasses file for the reciprocal analysis (in a worker process): a
    :class:`SetRead` whose items have ``id``, ``classId`` and ``attributes``.

    ``imported`` (STAR file, RELION project folder, item count) of a set imported from a
    RELION job: kept as its source when the set still holds the job's rows (see
    :func:`.star_source.imported_items`).  Otherwise the set is written as STAR when a
    :class:`Conversion` is given, else only its items are read."""
    start = time.time()
    items = reason = None
    if imported is not None:
        star, project_dir, count = imported
        items, source, reason = imported_items(star, project_dir, classes_file, attributes,
                                               count)
        if reason is None:
            return SetRead("import", items, time.time() - start, source)
    if conversion is not None:
        items, _ = write_classes_star(classes_file, conversion.info, conversion.star_path,
                                      conversion.attributes, keep=["id", "classId"] + list(
                                          attributes), with_ctf=conversion.with_ctf)
        with StarTable.open(conversion.star_path) as source:
            len(source)  # its rows found here, not in the caller's process
        return SetRead("star", items, time.time() - start, source, reason)
    if items is None:
        items = sorted_class_items(classes_file, attributes)
    return SetRead("keys", items, time.time() - start, None, reason)


def _class_matrices(classes_file, items):
    """The (n, 4, 4) transformation matrices of one class's ``items``, or None when the
    items have none."""
    if items.empty:
        return None
    read = read_class_matrix_lines(classes_file, items["classId"].iat[0], MATRIX)
    if read is None:
        return None
    ids, lines = read
    if not np.array_equal(ids, items["id"].to_numpy()):
        raise ConversionError("%s: class %d: %d transformation matrices for %d particles"
                              % (classes_file, items["classId"].iat[0], len(ids), len(items)))
    return parse_matrix_lines(lines, len(ids))


def sorted_columns(tables, order):
    """{column: values} of ``tables`` stacked (columns they all have), rows in ``order``.
    ``tables`` is emptied as they are stacked, so that one copy of the rows is held."""
    names = [c for c in tables[0].columns if all(c in t.columns for t in tables)]
    stacked = {}
    for name in names:
        stacked[name] = np.concatenate([t[name].to_numpy() for t in tables])[order]
        for t in tables:
            del t[name]
    tables.clear()
    return stacked


def _with_image_names(columns):
    """``columns`` with the image index and path columns replaced, in place, by one
    ``rlnImageName`` column of :class:`ImageNames`."""
    names = ImageNames(columns[IMAGE_INDEX], columns[IMAGE_PATH])
    return {("rlnImageName" if name == IMAGE_INDEX else name): (names if name == IMAGE_INDEX
                                                                 else values)
            for name, values in columns.items() if name != IMAGE_PATH}


class StarConversions:
    """Runs :func:`write_classes_star` (:meth:`submit`) and :func:`read_classes`
    (:meth:`read`) calls: in up to ``processes`` worker processes, or in this process when
    ``processes`` is 1.  Use as a context manager; both return an object whose ``result()``
    waits for the call and returns what it returned."""

    def __init__(self, processes):
        self.processes = max(1, int(processes))
        self._pool = None

    def __enter__(self):
        if self.processes > 1:
            # spawn: a fresh interpreter, whatever threads or state the caller has; the
            # workers take this process's check of Scipion's set layout
            self._pool = ProcessPoolExecutor(self.processes,
                                             mp_context=multiprocessing.get_context("spawn"),
                                             initializer=set_sql.assume_pyworkflow_layout,
                                             initargs=(set_sql.pyworkflow_layout_problem(),))
        return self

    def __exit__(self, *exc):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        return False

    def submit(self, *args, **kwargs):
        return self._call(write_classes_star, *args, **kwargs)

    def read(self, *args, **kwargs):
        return self._call(read_classes, *args, **kwargs)

    def _call(self, function, *args, **kwargs):
        if self._pool is not None:
            return self._pool.submit(function, *args, **kwargs)
        return _InThisProcess(function, args, kwargs)


class _InThisProcess:
    """A call made when its ``result()`` is asked for."""

    def __init__(self, function, args, kwargs):
        self._call = (function, args, kwargs)

    def result(self):
        function, args, kwargs = self._call
        return function(*args, **kwargs)
