"""Files in and out of the classifier backend: CSV tables, MRC stacks and micrographs, JSON,
RELION coordinate STAR files.

Only the standard library, numpy and mrcfile are used (the backend's environment has neither
pandas nor starfile). Every reader names the file and the field when something is wrong, by
raising :class:`BackendError`; every writer writes a temporary file and renames it, so an
interrupted run leaves no half-written output.
"""

import csv
import json
import os
import re
import uuid
import warnings
from collections import OrderedDict
from contextlib import contextmanager

import mrcfile
import numpy as np

import imaging
from classifier_files import MICROGRAPH_COLUMNS, PARTICLE_COLUMNS
STAR_LABELS = ('_rlnCoordinateX', '_rlnCoordinateY', '_rlnAutopickFigureOfMerit',
               '_rlnClassNumber')


class BackendError(Exception):
    """Bad input or an impossible request; the message is one line meant for the user."""


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path`` and move it onto ``path`` when the body ends.

    Named as the plugin names its temporary files (``.NAME.<12 hex digits>.tmp``), so that a
    protocol's result folder removes those a killed run left."""
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)),
                       f'.{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp')
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_table(path, required):
    """Read a CSV file with a header into a dict of column lists.

    Parameters
    ----------
    path : str
        CSV file with a header line.
    required : sequence of str
        Columns that must be present.

    Returns
    -------
    dict
        Column name -> list of str values, in file order.
    """
    try:
        with open(path, newline='', encoding='utf-8') as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise BackendError(f'{path}: missing column(s) {", ".join(missing)} '
                                   f'(found {", ".join(header) or "no header"})')
            columns = {name: [] for name in header}
            for row in reader:
                for name in header:
                    columns[name].append(row[name])
    except OSError as exc:
        raise BackendError(f'{path}: cannot read ({exc.strerror})') from exc
    return columns


def _numbers(path, columns, name, kind):
    values = columns[name]
    try:
        return np.array([kind(v) for v in values])
    except (TypeError, ValueError):
        bad = next(v for v in values if not _parses(v, kind))
        raise BackendError(f'{path}: column {name} holds {bad!r}, not a number') from None


def _parses(value, kind):
    try:
        kind(value)
    except (TypeError, ValueError):
        return False
    return True


def read_particles(path, labelled):
    """Read a particle table (``stack,index,label,pixel_size``; ``label`` only if labelled).

    Parameters
    ----------
    path : str
        CSV file. ``stack`` is an MRC stack path (relative paths are taken from the current
        directory), ``index`` 1-based, ``label`` 1 good / 0 bad, ``pixel_size`` in Å.
    labelled : bool
        Whether the ``label`` column is required and checked.

    Returns
    -------
    dict
        ``stack`` (list of str), ``index`` (int array, 1-based), ``pixel_size`` (float
        array) and, if labelled, ``label`` (int array of 0/1).
    """
    required = PARTICLE_COLUMNS if labelled else ('stack', 'index', 'pixel_size')
    columns = read_table(path, required)
    table = {'stack': columns['stack'],
             'index': _numbers(path, columns, 'index', int),
             'pixel_size': _numbers(path, columns, 'pixel_size', float)}
    if not table['stack']:
        raise BackendError(f'{path}: no particles (the set is empty)')
    if np.any(table['index'] < 1):
        raise BackendError(f'{path}: column index must be 1-based (found {table["index"].min()})')
    if np.any(table['pixel_size'] <= 0):
        raise BackendError(f'{path}: column pixel_size must be positive')
    if labelled:
        label = _numbers(path, columns, 'label', int)
        if not np.all((label == 0) | (label == 1)):
            raise BackendError(f'{path}: column label must be 1 (good) or 0 (bad)')
        for value, name in ((1, 'good'), (0, 'bad')):
            if not np.any(label == value):
                raise BackendError(f'{path}: no {name} particles (label {value}); training needs '
                                   f'both good and bad particles')
        table['label'] = label
    return table


def read_micrograph_table(path):
    """Read a micrograph table (``path,pixel_size,name``); names must be unique.

    Returns
    -------
    dict
        ``path`` and ``name`` (lists of str), ``pixel_size`` (float array).
    """
    columns = read_table(path, MICROGRAPH_COLUMNS)
    table = {'path': columns['path'], 'name': columns['name'],
             'pixel_size': _numbers(path, columns, 'pixel_size', float)}
    if not table['path']:
        raise BackendError(f'{path}: no micrographs')
    if np.any(table['pixel_size'] <= 0):
        raise BackendError(f'{path}: column pixel_size must be positive')
    stems = [file_stem(n) for n in table['name']]
    if len(set(stems)) != len(stems):
        raise BackendError(f'{path}: micrograph names are not unique (after replacing characters '
                           f'other than letters, digits, ".", "_" and "-")')
    return table


def file_stem(name):
    """File-name-safe micrograph name: characters other than ``[A-Za-z0-9._-]`` become ``_``."""
    return re.sub(r'[^A-Za-z0-9._-]', '_', name) or '_'


def open_mrc(path):
    """Memory-map an MRC file read-only, with an error naming the file if that fails.

    A header that mrcfile finds invalid is accepted when the data can still be mapped
    (permissive mode), as some acquisition software writes such headers.
    """
    if not os.path.isfile(path):
        raise BackendError(f'{path}: no such file')
    try:
        return mrcfile.mmap(path, mode='r')
    except (OSError, ValueError) as exc:
        reason = exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            handle = mrcfile.mmap(path, mode='r', permissive=True)
    except (OSError, ValueError):
        handle = None
    if handle is None or handle.data is None:
        raise BackendError(f'{path}: not a readable MRC file ({reason})') from None
    return handle


class ParticleImages:
    """Particles of a table, read from their MRC stacks on demand and put on a working grid.

    Stacks are memory-mapped (never copied; at most :attr:`OPEN_STACKS` open at a time, as
    RELION writes one stack per micrograph); each request reads only the asked images, stack
    by stack, resamples them to ``pixel_size`` / ``box`` (see :func:`imaging.to_working_grid`)
    and normalises them. Every stack is checked when the object is made.

    Parameters
    ----------
    table : dict
        From :func:`read_particles`.
    box : int
        Working box in pixels.
    normalize : str
        One of :data:`imaging.NORMALIZE_MODES`.
    pixel_size : float or None
        Working pixel size in Å; may be set later (attribute ``pixel_size``), before loading.
    """

    OPEN_STACKS = 64

    def __init__(self, table, box, normalize, pixel_size=None):
        self.pixel_size, self.box, self.normalize = pixel_size, int(box), normalize
        self.index = table['index'] - 1
        self.particle_pixel_size = table['pixel_size']
        self._maps = OrderedDict()
        names, self.stack_id = np.unique(np.asarray(table['stack'], dtype=object),
                                         return_inverse=True)
        self.stacks = list(names)
        self.stack_box = np.zeros(len(self.stacks), dtype=int)
        for sid, name in enumerate(self.stacks):
            data = self._data(sid)
            self.stack_box[sid] = data.shape[-1]
            largest = int(self.index[self.stack_id == sid].max()) + 1
            if largest > data.shape[0]:
                raise BackendError(f'{name}: index {largest} asked for, but the stack holds '
                                   f'{data.shape[0]} image(s)')
        self.cache = None

    def __len__(self):
        return len(self.index)

    def _data(self, sid):
        if sid in self._maps:
            self._maps.move_to_end(sid)
        else:
            if len(self._maps) >= self.OPEN_STACKS:
                self._maps.popitem(last=False)[1].close()
            self._maps[sid] = open_mrc(self.stacks[sid])
        data = self._maps[sid].data
        if data is None or data.ndim not in (2, 3):
            raise BackendError(f'{self.stacks[sid]}: not an image stack (data shape '
                               f'{None if data is None else data.shape})')
        if data.ndim == 2:
            data = data[None]
        if data.shape[-1] != data.shape[-2]:
            raise BackendError(f'{self.stacks[sid]}: images are {data.shape[-1]}x{data.shape[-2]} '
                               f'pixels; particles must be square')
        return data

    def groups(self, rows=None):
        """Distinct ``(stack box, pixel size, count)`` of the particles (or of ``rows``)."""
        rows = np.arange(len(self)) if rows is None else np.asarray(rows)
        keys = np.column_stack([self.stack_box[self.stack_id[rows]],
                                self.particle_pixel_size[rows]])
        uniq, counts = np.unique(keys, axis=0, return_counts=True)
        return [(int(b), float(p), int(c)) for (b, p), c in zip(uniq, counts)]

    def load(self, rows):
        """Working-grid, normalised float32 images ``(len(rows), box, box)`` of the given rows."""
        rows = np.asarray(rows, dtype=int)
        if self.cache is not None:
            return self.cache[rows]
        out = np.empty((len(rows), self.box, self.box), dtype=np.float32)
        keys = np.column_stack([self.stack_id[rows], self.particle_pixel_size[rows]])
        for sid, pix in np.unique(keys, axis=0):
            sel = np.flatnonzero((keys[:, 0] == sid) & (keys[:, 1] == pix))
            wanted = self.index[rows[sel]]
            order = np.argsort(wanted, kind='stable')
            data = self._data(int(sid))
            try:
                raw = np.asarray(data[wanted[order]], dtype=np.float32)
            except (OSError, ValueError) as exc:
                raise BackendError(f'{self.stacks[int(sid)]}: cannot read images ({exc})') from exc
            images = imaging.to_working_grid(raw, pix, self.pixel_size, self.box)
            out[sel[order]] = imaging.normalize(images, self.normalize)
        return out

    def preload(self, chunk=2048):
        """Load every particle into memory once (in chunks) so that later loads are copies."""
        cache = np.empty((len(self), self.box, self.box), dtype=np.float32)
        for start in range(0, len(self), chunk):
            rows = np.arange(start, min(start + chunk, len(self)))
            cache[rows] = self.load(rows)
        self.cache = cache

    def close(self):
        """Release the memory maps."""
        for handle in self._maps.values():
            handle.close()
        self._maps.clear()


def read_micrograph(path):
    """Read a micrograph as a float32 ``(ny, nx)`` array."""
    with open_mrc(path) as handle:
        data = handle.data
        if data is not None and data.ndim == 3 and data.shape[0] == 1:
            data = data[0]
        if data is None or data.ndim != 2:
            raise BackendError(f'{path}: not a single 2D micrograph (data shape '
                               f'{None if data is None else data.shape})')
        return np.array(data, dtype=np.float32)


def write_csv(path, header, rows):
    """Write rows (sequences) under a header line, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, 'w', newline='', encoding='utf-8') as handle:
            writer = csv.writer(handle, lineterminator='\n')
            writer.writerow(header)
            writer.writerows(rows)


def write_json(path, content):
    """Write a JSON document (indented, keys in insertion order), atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, 'w', encoding='utf-8') as handle:
            json.dump(content, handle, indent=2)
            handle.write('\n')


def read_json(path):
    """Read a JSON document, naming the file if it is missing or broken."""
    try:
        with open(path, encoding='utf-8') as handle:
            return json.load(handle)
    except OSError as exc:
        raise BackendError(f'{path}: cannot read ({exc.strerror})') from exc
    except ValueError as exc:
        raise BackendError(f'{path}: not valid JSON ({exc})') from exc


def write_coordinates_star(path, x, y, scores, class_number=1):
    """Write a RELION 3.1 coordinate STAR file (one ``data_`` block, no optics), atomically.

    Parameters
    ----------
    path : str
        Output file, e.g. ``coordinates/<micrograph>_classifier.star``.
    x, y : numpy.ndarray
        Particle centres in micrograph pixels.
    scores : numpy.ndarray
        Written as ``_rlnAutopickFigureOfMerit``.
    class_number : int
        Written as ``_rlnClassNumber`` on every row.
    """
    lines = ['', '# version 30001', '', 'data_', '', 'loop_']
    lines += [f'{label} #{n}' for n, label in enumerate(STAR_LABELS, start=1)]
    lines += [f'{a:12.2f} {b:12.2f} {s:12.6f} {class_number:6d}'
              for a, b, s in zip(x, y, scores)]
    with atomic_path(path) as tmp:
        with open(tmp, 'w', encoding='utf-8') as handle:
            handle.write('\n'.join(lines) + '\n\n')
