"""cryoSPARC particle files (``.cs``): numpy structured arrays, one row per particle.

cryoSPARC writes each job output as numpy ``.npy`` data under a ``.cs`` name, fields named
``<result>/<field>``: ``uid`` (uint64, a particle's identity across the jobs that descend from
one extraction or import), ``blob/path`` (bytes, the stack relative to the cryoSPARC project
folder, e.g. ``J19/extract/..._particles.mrc``; exported files prefix it with ``>``),
``blob/idx`` (0-based image in the stack), ``ctf/*``, ``location/*`` (micrograph and the
particle's centre as fractions of its width and height), ``alignments3D/*`` or
``alignments2D/*`` (``class``, 0-based, and ``class_posterior`` after a classification).

A job splits its particles over a main file (what the job computed) and passthrough files
(fields inherited from its inputs), rows matched by ``uid``. :class:`CsParticles` joins them
without copying: files are memory-mapped and only the fields asked for are read, so reading a
million-particle job costs a few of its columns, not the whole file. Subsets are written with
every field of every part, rows verbatim (:meth:`CsParticles.write_subset`), so that cryoSPARC
users can bring them back.
"""
import mmap
from pathlib import Path

import numpy as np
import pandas as pd

from ._atomic import atomic_path
from .errors import FormatError

__all__ = ['CsError', 'CsParticles', 'load_cs', 'read_header', 'write_cs', 'clean_path',
           'CS_SUFFIX',
           'UID', 'BLOB_PATH', 'BLOB_IDX', 'CLASS_FIELDS', 'MULTI_POSTERIOR',
           'class_field', 'posterior_field']

CS_SUFFIX = '.cs'
UID = 'uid'
BLOB_PATH = 'blob/path'
BLOB_IDX = 'blob/idx'
#: Hard class fields, in the order they are looked for (0-based class numbers).
CLASS_FIELDS = ('alignments3D/class', 'alignments2D/class', 'alignments3D_multi/class')
#: Per-class posteriors (rows x classes) of heterogeneous refinements of cryoSPARC 4.5+:
#: the hard class is the most probable one when no class field is written.
MULTI_POSTERIOR = 'alignments3D_multi/class_posterior'

_NUMPY_MAGIC = b'\x93NUMPY'
_CSDAT_MAGIC = b'\x95CSDAT'
#: Headers of files with many fields (one alignment per class) exceed numpy's default.
_MAX_HEADER = 1 << 20
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}


class CsError(FormatError):
    """A ``.cs`` file that cannot be read or lacks what is asked of it."""


def read_header(path):
    """Check a ``.cs`` file and read its numpy header.

    Returns
    -------
    dtype : numpy.dtype
    n_rows : int
    offset : int
        Byte offset of the first row.

    Raises
    ------
    CsError
        If the file is missing, in cryoSPARC's compressed stream format, not a numpy
        structured array, truncated, or holds Python objects (which would need unpickling).
    """
    path = Path(path)
    if not path.is_file():
        raise CsError(path, 'file not found')
    with open(path, 'rb') as fh:
        magic = fh.read(6)
        if magic == _CSDAT_MAGIC:
            raise CsError(path, "cryoSPARC's compressed stream format (CSDAT) is not read: "
                                "save the dataset in numpy format (cryosparc-tools "
                                "Dataset.save(path), the default)")
        if magic != _NUMPY_MAGIC:
            raise CsError(path, 'not a cryoSPARC .cs file (no numpy array header)')
        fh.seek(0)
        try:
            version = np.lib.format.read_magic(fh)
            if version not in _HEADER_READERS:
                raise ValueError(f'numpy format version {version} is not read')
            shape, fortran, dtype = _HEADER_READERS[version](fh, max_header_size=_MAX_HEADER)
        except (ValueError, OSError, EOFError) as exc:
            raise CsError(path, f'unreadable numpy array header: {exc}') from None
        offset = fh.tell()
    if dtype.hasobject:
        raise CsError(path, 'fields stored as Python objects are not read (they would need '
                            'unpickling): save the dataset with text fields as bytes, as '
                            'cryoSPARC does')
    if dtype.names is None or len(shape) != 1 or fortran:
        raise CsError(path, 'not a table of particles (a one-dimensional array of named '
                            'fields)')
    if path.stat().st_size < offset + shape[0] * dtype.itemsize:
        raise CsError(path, f'truncated: {shape[0]} rows of {dtype.itemsize} bytes announced')
    return dtype, int(shape[0]), offset


def load_cs(path, mmap=True):
    """A ``.cs`` file as a structured array, memory-mapped unless ``mmap`` is false.

    Raises
    ------
    CsError
        See :func:`read_header`.
    """
    dtype, n, offset = read_header(path)
    if n == 0:
        return np.empty(0, dtype=dtype)
    if mmap:
        return np.memmap(path, dtype=dtype, mode='r', offset=offset, shape=(n,))
    with open(path, 'rb') as fh:
        fh.seek(offset)
        return np.fromfile(fh, dtype=dtype, count=n)


def _release(mapped, start, length):
    """Drop a mapped range's pages from this process (the page cache keeps them)."""
    if hasattr(mapped, 'madvise') and hasattr(mmap, 'MADV_DONTNEED'):
        aligned = start - start % mmap.PAGESIZE
        mapped.madvise(mmap.MADV_DONTNEED, aligned, start + length - aligned)


def _byte_runs(source, target, names):
    """(source offset, target offset, length) of the byte ranges that copy fields ``names``
    of records ``source`` into records ``target``, adjacent fields merged into one range."""
    runs = []
    for name in sorted(names, key=lambda n: source.fields[n][1]):
        start, at = source.fields[name][1], target.fields[name][1]
        length = source.fields[name][0].itemsize
        if runs and runs[-1][0] + runs[-1][2] == start and runs[-1][1] + runs[-1][2] == at:
            runs[-1][2] += length
        else:
            runs.append([start, at, length])
    return runs


def write_cs(path, array):
    """Write a structured array as a ``.cs`` file (numpy format, under a temporary name
    renamed when complete). Returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, 'wb') as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
    return path


def clean_path(value):
    """A file name of a ``.cs`` text field as ``str``: decoded, without surrounding blanks
    and without the ``>`` that exported files put before paths relative to the export."""
    if isinstance(value, bytes):
        value = value.decode('utf-8', 'replace')
    return str(value).strip().lstrip('>')


def class_field(fields):
    """The hard class field among ``fields``, or None."""
    return next((f for f in CLASS_FIELDS if f in fields), None)


def posterior_field(fields, class_name=None):
    """The posterior of the hard class (``<prefix>/class_posterior``), or None."""
    if class_name is None:
        return None
    name = class_name.rsplit('/', 1)[0] + '/class_posterior'
    return name if name in fields else None


class CsParticles:
    """The particles of one cryoSPARC output: a main file and passthrough files by ``uid``.

    Columns are read in blocks of rows (:meth:`column`, :meth:`prefetch`): only the fields
    asked for are kept, and memory holds one block of the file at a time; whole columns stay
    cached until :meth:`close`. Subsets (:meth:`subset`, :meth:`write_subset`) are gathered
    from memory-mapped files, also released by :meth:`close`.

    Parameters
    ----------
    main : path
        The file whose rows (and row order) define the particles.
    passthrough : list of path, optional
        Files holding more fields of the same particles (any row order), matched by ``uid``.
    project_dir : path, optional
        The cryoSPARC project folder (``blob/path`` and ``location/micrograph_path`` are
        relative to it).

    Attributes
    ----------
    path : pathlib.Path
        The main file.
    paths : list of pathlib.Path
        Every file, main first.
    fields : list of str
        Every field, main file's first; a field in several files is taken from the first.
    project_dir : pathlib.Path or None

    Raises
    ------
    CsError
        If a file is unreadable, a passthrough file lacks ``uid`` or some particle of the
        main file.
    """

    #: Bytes of a file read at a time by :meth:`column`.
    BLOCK_BYTES = 1 << 25

    def __init__(self, main, passthrough=(), project_dir=None):
        self.path = Path(main)
        self.project_dir = Path(project_dir) if project_dir is not None else None
        self.paths = [self.path] + [Path(p) for p in passthrough]
        self._headers = [read_header(p) for p in self.paths]
        self._rows = [None] * len(self.paths)     # main row -> row of each part
        self._mapped = None
        self._cache = {}                            # (part, field) -> whole column
        self._owner = {}                            # field -> part index
        for k, (dtype, _, _) in enumerate(self._headers):
            for name in dtype.names:
                self._owner.setdefault(name, k)
        self.fields = list(self._owner)
        self._n = self._headers[0][1]
        self._joined = len(self.paths) == 1

    def __len__(self):
        return self._n

    def __contains__(self, field):
        return field in self._owner

    def __repr__(self):
        return f'CsParticles({self.path}, {len(self)} rows, {len(self.paths) - 1} passthrough)'

    def _join(self):
        """Match the passthrough files' rows to the main file's, by uid (once, when a field
        of a passthrough file is first needed)."""
        if self._joined:
            return
        if UID not in self._headers[0][0].names:
            raise CsError(self.path, f'no {UID} field to match the passthrough files '
                                     f'({", ".join(str(p) for p in self.paths[1:])})')
        uids = self._whole(0, [UID])[UID]
        for k in range(1, len(self.paths)):
            path = self.paths[k]
            if UID not in self._headers[k][0].names:
                raise CsError(path, f'no {UID} field: cannot be matched with {self.path}')
            other = self._whole(k, [UID])[UID]
            if len(other) == len(uids) and np.array_equal(other, uids):
                continue
            try:
                rows = pd.Index(other).get_indexer(uids)
            except pd.errors.InvalidIndexError:
                raise CsError(path, f'{UID} values repeat: cannot be matched with '
                                    f'{self.path}') from None
            if (rows < 0).any():
                raise CsError(path, f'{int(np.sum(rows < 0))} particles of {self.path} are '
                                    f'missing (by {UID})')
            self._rows[k] = rows
        self._joined = True

    def _read(self, k, names, rows=None):
        """Fields ``names`` of file ``k`` (its own row numbers ``rows``, or every row), read
        through a memory map one block at a time, each block's pages released once its
        fields are copied (memory stays at one block): {name: array}."""
        dtype, n, offset = self._headers[k]
        wanted = None if rows is None else np.asarray(rows, dtype=np.int64)
        count = n if wanted is None else len(wanted)
        out = {name: np.empty((count,) + dtype.fields[name][0].shape,
                              dtype=dtype.fields[name][0].base) for name in names}
        if not count:
            return out
        step = max(1, self.BLOCK_BYTES // dtype.itemsize)
        if wanted is None:
            blocks = [(start, slice(start, min(start + step, n)), None)
                      for start in range(0, n, step)]
        else:           # the wanted rows block by block, in file order
            order = np.argsort(wanted, kind='stable')
            ordered = wanted[order]
            starts = np.arange(int(ordered[0]) - int(ordered[0]) % step, int(ordered[-1]) + 1,
                               step)
            bounds = np.searchsorted(ordered, np.append(starts, starts[-1] + step))
            blocks = [(int(start), order[lo:hi], ordered[lo:hi] - start)
                      for start, lo, hi in zip(starts, bounds[:-1], bounds[1:]) if hi > lo]
        with open(self.paths[k], 'rb') as fh, \
                mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            for start, target, inside in blocks:
                rows_here = min(step, n - start)
                block = np.frombuffer(mapped, dtype=dtype, count=rows_here,
                                      offset=offset + start * dtype.itemsize)
                picked = block if inside is None else block[inside]
                for name in names:
                    out[name][target] = picked[name]
                del block, picked
                _release(mapped, offset + start * dtype.itemsize, rows_here * dtype.itemsize)
        return out

    def _whole(self, k, names):
        """Whole columns of file ``k``, read together in one pass and cached."""
        missing = [n for n in names if (k, n) not in self._cache]
        if missing:
            self._cache.update({(k, n): v for n, v in self._read(k, missing).items()})
        return {n: self._cache[(k, n)] for n in names}

    def prefetch(self, names):
        """Read these fields (those present) in one pass per file, for :meth:`column`."""
        by_part = {}
        for name in names:
            if name in self._owner:
                by_part.setdefault(self._owner[name], []).append(name)
        for k, part_names in by_part.items():
            self._whole(k, part_names)

    @property
    def row_bytes(self):
        """Bytes of one row with every field (as :meth:`write_subset` writes it)."""
        return sum(self._headers[self._owner[name]][0].fields[name][0].itemsize
                   for name in self.fields)

    def check(self):
        """Match the passthrough files now (raises :class:`CsError` when they lack some
        particle of the main file)."""
        self._join()

    def field_source(self, name):
        """The file a field is read from."""
        return self.paths[self._owner[name]]

    def column(self, name, rows=None):
        """One field as an in-memory array, for every particle or for ``rows``.

        Raises
        ------
        CsError
            If no file has the field (the message lists the fields present).
        """
        if name not in self._owner:
            raise CsError(self.path, f'no field {name} (fields: {", ".join(self.fields)})')
        k = self._owner[name]
        if k:
            self._join()
        index = self._rows[k]
        if (k, name) in self._cache or rows is None:
            values = self._whole(k, [name])[name]
            if index is not None:
                rows = index if rows is None else index[rows]
            return values.copy() if rows is None else values[rows]
        return self._read(k, [name], rows if index is None else index[rows])[name]

    def subset(self, rows):
        """Every field of the selected rows, one structured array (main fields first).

        Rows are gathered as raw bytes from the memory-mapped files (a record is copied as
        it is written), then each file's fields are placed by byte range."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        rows = rows.astype(np.int64, copy=False)
        self._join()
        if len(self.paths) == 1:
            return self._take(0, rows).view(self._headers[0][0]).reshape(-1)
        owned = [[name for name in dtype.names if self._owner[name] == k]
                 for k, (dtype, _, _) in enumerate(self._headers)]
        out = np.empty(len(rows), dtype=np.dtype([
            (name, self._headers[k][0].fields[name][0]) for k, names in enumerate(owned)
            for name in names]))
        target = out.view(np.uint8).reshape(len(rows), out.dtype.itemsize)
        for k, names in enumerate(owned):
            source = self._take(k, rows if self._rows[k] is None else self._rows[k][rows])
            for start, at, length in _byte_runs(self._headers[k][0], out.dtype, names):
                target[:, at:at + length] = source[:, start:start + length]
        return out

    def _take(self, k, rows):
        """Rows of file ``k`` as raw records, (len(rows), record bytes) uint8."""
        dtype, n, offset = self._headers[k]
        if not n:
            return np.empty((0, dtype.itemsize), dtype=np.uint8)
        if self._mapped is None:
            self._mapped = {}
        if k not in self._mapped:
            self._mapped[k] = np.memmap(self.paths[k], dtype=np.uint8, mode='r', offset=offset,
                                        shape=(n, dtype.itemsize))
        return np.take(self._mapped[k], rows, axis=0)

    def write_subset(self, out_path, rows):
        """Write the selected rows with every field (uid included) as a ``.cs`` file.

        The file is written under a temporary name and renamed when complete. Returns the
        number of rows written.
        """
        subset = self.subset(rows)
        write_cs(out_path, subset)
        return len(subset)

    def close(self):
        """Release the cached columns and the memory maps of :meth:`subset` (read again
        when next needed)."""
        self._mapped = None
        self._cache = {}
