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
from pathlib import Path

import numpy as np

from ._atomic import atomic_path
from .errors import FormatError

__all__ = ['CsError', 'CsParticles', 'load_cs', 'write_cs', 'clean_path', 'CS_SUFFIX',
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


class CsError(FormatError):
    """A ``.cs`` file that cannot be read or lacks what is asked of it."""


def load_cs(path, mmap=True):
    """Open a ``.cs`` file as a structured array (memory-mapped unless ``mmap`` is false).

    Raises
    ------
    CsError
        If the file is missing, in cryoSPARC's compressed stream format, not a numpy
        structured array, or holds Python objects (which would need unpickling).
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
    try:
        array = np.load(path, mmap_mode='r' if mmap else None, allow_pickle=False,
                        max_header_size=_MAX_HEADER)
    except ValueError as exc:
        if 'object' in str(exc).lower() or 'pickle' in str(exc).lower():
            raise CsError(path, 'fields stored as Python objects are not read (they would '
                                'need unpickling): save the dataset with text fields as '
                                'bytes, as cryoSPARC does') from None
        if mmap:        # an empty array cannot be mapped
            return load_cs(path, mmap=False)
        raise CsError(path, f'unreadable numpy array: {exc}') from None
    except (OSError, EOFError) as exc:
        raise CsError(path, f'unreadable numpy array: {exc}') from None
    if array.dtype.names is None or array.ndim != 1:
        raise CsError(path, 'not a table of particles (a one-dimensional array of named '
                            'fields)')
    return array


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

    def __init__(self, main, passthrough=(), project_dir=None):
        self.path = Path(main)
        self.project_dir = Path(project_dir) if project_dir is not None else None
        self.paths = [self.path] + [Path(p) for p in passthrough]
        self._mapped = [load_cs(p) for p in self.paths]
        self._rows = [None] * len(self.paths)     # main row -> row of each part
        self._owner = {}                            # field -> part index
        for k, array in enumerate(self._arrays):
            for name in array.dtype.names:
                self._owner.setdefault(name, k)
        self.fields = list(self._owner)
        self._n = len(self._mapped[0])
        if len(self._arrays) > 1:
            self._join()

    def __len__(self):
        return self._n

    def __contains__(self, field):
        return field in self._owner

    def __repr__(self):
        return f'CsParticles({self.path}, {len(self)} rows, {len(self.paths) - 1} passthrough)'

    def _join(self):
        main = self._arrays[0]
        if UID not in main.dtype.names:
            raise CsError(self.path, f'no {UID} field to match the passthrough files '
                                     f'({", ".join(str(p) for p in self.paths[1:])})')
        uids = np.asarray(main[UID])
        for k in range(1, len(self._arrays)):
            part, path = self._arrays[k], self.paths[k]
            if UID not in part.dtype.names:
                raise CsError(path, f'no {UID} field: cannot be matched with {self.path}')
            other = np.asarray(part[UID])
            if len(other) == len(uids) and np.array_equal(other, uids):
                continue
            order = np.argsort(other, kind='stable')
            pos = np.minimum(np.searchsorted(other[order], uids), max(len(other) - 1, 0))
            found = len(other) > 0 and np.array_equal(other[order][pos], uids)
            if not found:
                missing = int(np.sum(other[order][pos] != uids)) if len(other) else len(uids)
                raise CsError(path, f'{missing} particles of {self.path} are missing (by '
                                    f'{UID})')
            self._rows[k] = order[pos]

    @property
    def row_bytes(self):
        """Bytes of one row with every field (as :meth:`write_subset` writes it)."""
        return sum(self._arrays[self._owner[name]].dtype.fields[name][0].itemsize
                   for name in self.fields)

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
        values = self._arrays[k][name]
        index = self._rows[k]
        if index is not None:
            rows = index if rows is None else index[rows]
        return np.array(values if rows is None else values[rows])

    def subset(self, rows):
        """Every field of the selected rows, one structured array (main fields first)."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        if len(self._arrays) == 1:
            return np.asarray(self._arrays[0][rows])
        descr = []
        for k, array in enumerate(self._arrays):
            descr += [(name, array.dtype.fields[name][0]) for name in array.dtype.names
                      if self._owner[name] == k]
        out = np.empty(len(rows), dtype=np.dtype(descr))
        for name in self.fields:
            out[name] = self.column(name, rows)
        return out

    def write_subset(self, out_path, rows):
        """Write the selected rows with every field (uid included) as a ``.cs`` file.

        The file is written under a temporary name and renamed when complete. Returns the
        number of rows written.
        """
        subset = self.subset(rows)
        write_cs(out_path, subset)
        return len(subset)

    def close(self):
        """Release the memory maps (the files are mapped again on the next read)."""
        self._mapped = None

    @property
    def _arrays(self):
        if self._mapped is None:
            self._mapped = [load_cs(p) for p in self.paths]
        return self._mapped
