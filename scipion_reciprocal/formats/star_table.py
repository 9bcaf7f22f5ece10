"""Fast access to one loop block of a large STAR file.

A RELION ``run_itNNN_data.star`` of a million particles is a 200-400 MB text file, and
parsing all of it takes seconds.  :class:`StarTable` maps the file, finds the loop block
without reading past its header, tokenises the body once with vectorised numpy in
cache-sized chunks and converts only the columns asked for.  It keeps the byte span of
every row, so that a subset of rows is written as the file's header (everything before
the first row: ``# version`` lines and ``data_optics`` included) followed by the selected
rows copied verbatim, at disk speed.

Bodies with quoted values or ``#`` comments take a slower path through pandas, with
the same results.
"""

import mmap
import os
from io import BytesIO
from pathlib import Path

import numpy as np
import pandas as pd

from ._atomic import atomic_path
from ._star_tokens import (SlowPath, convert, next_data_line, parse_float_tokens,
                           parse_int_tokens, series_to_array, text_values, tokenise)
from .errors import StarError

__all__ = ['StarTable', 'parse_int_tokens', 'parse_float_tokens', 'text_values']

_WRITE_BLOCK = 1 << 23      # bytes of rows gathered at a time when writing subsets


class StarTable:
    """One loop block of a STAR file, read column by column.

    Create with :meth:`open`. The file stays mapped until :meth:`close` (also a context
    manager); reading or writing after that maps it again.

    Attributes
    ----------
    path : pathlib.Path
    block : str
        Block name without ``data_`` (``'particles'``; ``''`` for RELION 3.0's ``data_``).
    columns : list of str
        Column labels in file order, without the leading underscore.
    version : str or None
        Number of the ``# version`` line written before the block (``'30001'``).
    blocks_before : list of str
        Names of the blocks that come before this one (``['optics']`` in RELION 3.1).
    header : bytes
        The file from its start up to the first row of the block.
    """

    def __init__(self, path, data, block, columns, version, blocks_before, body_start, stat):
        self.path = path
        self.block = block
        self.columns = columns
        self.version = version
        self.blocks_before = blocks_before
        self.header = bytes(data[:body_start])
        self._data = data
        self._body_start = body_start
        self._stat = stat
        self._rows = None           # (row_start, row_end) byte offsets, end after the newline
        self._slow = False
        self._store = None          # rows cached for writing
        self._block = None          # buffer the rows are gathered in before writing
        #: Box size for a RELION 3.0 file without rlnImageSize (its subsets' optics table).
        self.image_size = None

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path, block=None):
        """Locate a loop block and its column labels (the body is not read yet).

        Parameters
        ----------
        path : str or os.PathLike
        block : str, optional
            Block name without ``data_``. None takes the first loop block that is not
            ``optics`` (``data_particles`` in RELION 3.1+, ``data_`` or ``data_images``
            in RELION 3.0).

        Returns
        -------
        StarTable

        Raises
        ------
        StarError
            If the file is missing or empty, the block is absent or is not a loop.
        """
        path = Path(path)
        data, stat = _map(path)
        if block is not None and block.startswith('data_'):
            block = block[5:]
        seen = []
        pos = 0
        while True:
            start = next_data_line(data, pos)
            if start < 0:
                break
            name, after = _block_name(data, start)
            header = _parse_loop_header(data, after)
            if header is not None and (name == block or (block is None and name != 'optics')):
                columns, body_start = header
                if not columns:
                    raise StarError(path, f'data_{name}: loop_ without column labels')
                version = _version_before(data, start)
                return cls(path, data, name, columns, version, seen, body_start, stat)
            if name == block:
                raise StarError(path, f'data_{name} is not a loop block')
            seen.append(name)
            pos = after
        if not seen:
            raise StarError(path, 'no data_ block: not a STAR file')
        present = ', '.join('data_' + n for n in seen)
        if block is None:
            raise StarError(path, f'no particle loop block (blocks present: {present})')
        raise StarError(path, f'no data_{block} block (blocks present: {present})')

    def close(self):
        """Unmap the file and drop cached rows; parsed offsets are kept."""
        self._store = None
        self._block = None
        if isinstance(self._data, mmap.mmap):
            try:
                self._data.close()
            except BufferError:
                return
        self._data = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __len__(self):
        self._scan()
        return len(self._rows[0])

    @property
    def n_rows(self):
        """Number of rows of the block."""
        return len(self)

    @property
    def has_optics(self):
        """Whether a ``data_optics`` block precedes the table (RELION 3.1+)."""
        return 'optics' in self.blocks_before

    def __repr__(self):
        return f'StarTable({str(self.path)!r}, block={self.block!r}, columns={len(self.columns)})'

    def require(self, names, what='this analysis'):
        """Raise :class:`StarError` naming the file and block if a column is absent."""
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise StarError(self.path, f'data_{self.block} has no column '
                                       f'{", ".join("_" + m for m in missing)} (needed for {what})')

    # ------------------------------------------------------------------ reading

    def read_raw(self, names, kinds=None):
        """Read columns as numpy arrays.

        Parameters
        ----------
        names : iterable of str
        kinds : dict, optional
            Label -> ``'int'``, ``'float'`` or ``'text'`` to force a type.

        Returns
        -------
        dict
            Label -> array: int64 when every value is an integer, float64 when every
            value is a number, else a fixed-width bytes array (dtype ``S``).

        Raises
        ------
        StarError
            If a column is absent, or a forced numeric column holds text.
        """
        names = list(dict.fromkeys(names))
        kinds = kinds or {}
        self.require(names, 'reading')
        wanted = [self.columns.index(n) for n in names]
        values = self._scan(wanted)
        if self._slow:
            frame = self._read_slow(names)
            out = {n: series_to_array(frame[n], kinds.get(n)) for n in names}
        else:
            out = {}
            for name, col in zip(names, wanted):
                out[name] = convert(values.pop(col), kinds.get(name))
        for name, values in out.items():
            if values is None:
                raise StarError(self.path, f'data_{self.block}: column _{name} holds values '
                                           f'that are not {kinds[name]} numbers')
        return out

    def read_columns(self, names):
        """Read columns into a DataFrame (text as Python ``str``).

        Parameters
        ----------
        names : iterable of str

        Returns
        -------
        pandas.DataFrame
            One column per name, in the order given.
        """
        raw = self.read_raw(names)
        frame = {}
        for name, values in raw.items():
            if values.dtype.kind == 'S':
                values = values.astype(f'U{max(values.dtype.itemsize, 1)}').astype(object)
            frame[name] = values
        return pd.DataFrame(frame, columns=list(raw))

    def optics(self):
        """The ``data_optics`` table before this block as a DataFrame, or None."""
        if not self.has_optics:
            return None
        table = StarTable._from_bytes(self.path, self.header, 'optics')
        return table.read_columns(table.columns)

    @classmethod
    def _from_bytes(cls, path, data, block):
        pos = 0
        while True:
            start = next_data_line(data, pos)
            name, after = _block_name(data, start)
            if name == block:
                columns, body_start = _parse_loop_header(data, after)
                return cls(path, data, name, columns, _version_before(data, start), [],
                           body_start, None)
            pos = after

    # ------------------------------------------------------------------ writing

    def write_subset(self, out_path, rows, extra_columns=None):
        """Write the header and the selected rows, byte for byte, to ``out_path``.

        Parameters
        ----------
        out_path : str or os.PathLike
        rows : array-like of int or bool
            Row indices (written in the order given) or a mask of length ``n_rows``.
        extra_columns : dict, optional
            Label (without the leading underscore) -> one value per selected row, in the
            order of ``rows``. Appended as the last column(s) of every row and of the loop
            header (numbers as RELION writes them: integers as they are, others ``%.6f``).

        Returns
        -------
        int
            Number of rows written.

        Notes
        -----
        A file without ``data_optics`` (RELION 3.0) cannot be copied as it is: its rows are
        parsed once and written by :func:`scipion_reciprocal.formats.star.write_particles_star`,
        which builds the optics table, so that every file written has ``data_optics``.
        The file is written under a temporary name and renamed when complete.
        """
        rows = self._as_indices(rows)
        extra_columns = self._check_extra(extra_columns, len(rows))
        if not self.has_optics:
            return self._write_subset_upgraded(out_path, rows, extra_columns)
        if self._store is None:
            self._store = self._row_store()
        header = self.header
        if header and not header.endswith(b'\n'):
            header += b'\n'
        if extra_columns:
            header = _add_labels(header, len(self.columns), list(extra_columns))
        suffix = _column_bytes(extra_columns, len(rows)) if extra_columns else None
        with atomic_path(out_path) as tmp, open(tmp, 'wb') as fh:
            fh.write(header)
            self._write_rows(fh, rows, suffix)
        return len(rows)

    def _check_extra(self, extra_columns, n):
        if not extra_columns:
            return None
        for label, values in extra_columns.items():
            if label.startswith('_') or not label or any(c.isspace() for c in label):
                raise ValueError(f'{self.path}: extra column label {label!r}: give it without '
                                 f'the leading underscore and without spaces')
            if label in self.columns:
                raise ValueError(f'{self.path}: data_{self.block} already has a column '
                                 f'_{label}')
            if len(values) != n:
                raise ValueError(f'{self.path}: {len(values)} values of _{label} for {n} rows')
        return dict(extra_columns)

    def _write_rows(self, fh, rows, suffix=None):
        """Write the selected rows, each ending with a newline, in blocks; ``suffix`` (one
        byte row per selected row, from its separator to its newline) replaces the line
        ends."""
        kind, store = self._store
        if kind == 'lines':
            if len(rows):
                lines = store[rows].tolist()
                if suffix is not None:
                    fh.write(b''.join(line.rstrip(b'\r') + end.tobytes()
                                      for line, end in zip(lines, suffix)))
                    return
                fh.write(b'\n'.join(lines))
                fh.write(b'\n')
            return
        cut = 0
        if suffix is not None and store.shape[0]:
            cut = 2 if store.shape[1] > 1 and store[0, -2] == 13 else 1    # \r\n or \n
        width = store.shape[1] - cut + (suffix.shape[1] if suffix is not None else 0)
        step = max(1, _WRITE_BLOCK // max(width, 1))
        if self._block is None or self._block.shape[1] != width or \
                len(self._block) < min(step, len(rows)):
            self._block = np.empty((min(step, max(len(rows), 1)), width), dtype=np.uint8)
        for start in range(0, len(rows), step):
            part = rows[start:start + step]
            out = self._block[:len(part)]
            if suffix is None:
                np.take(store, part, axis=0, out=out)
            else:
                out[:, :store.shape[1] - cut] = store[part, :store.shape[1] - cut]
                out[:, store.shape[1] - cut:] = suffix[start:start + len(part)]
            fh.write(out)

    def release(self):
        """Free the rows cached by :meth:`write_subset` (the file stays mapped)."""
        self._store = None
        self._block = None

    def _write_subset_upgraded(self, out_path, rows, extra_columns=None):
        from .star import write_particles_star
        if self._store is None or self._store[0] != 'frame':
            self._store = ('frame', self.read_columns(self.columns))
        frame = self._store[1].iloc[rows].reset_index(drop=True)
        for label, values in (extra_columns or {}).items():
            frame[label] = np.asarray(values)
        write_particles_star(out_path, frame, version=self.version or '30001',
                             image_size=self.image_size)
        return len(rows)

    def _as_indices(self, rows):
        rows = np.asarray(rows)
        n = len(self)
        if rows.dtype == bool:
            if rows.shape != (n,):
                raise ValueError(f'{self.path}: row mask of shape {rows.shape} for {n} rows')
            return np.flatnonzero(rows)
        rows = rows.astype(np.int64, copy=False).ravel()
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise IndexError(f'{self.path}: row index out of range 0..{n - 1}')
        return rows

    def _row_store(self):
        """Rows as a (n, width) byte array when all have one length, else as bytes objects.

        Bytes objects hold a row without its line end; :meth:`_write_rows` joins them.
        """
        self._scan()
        start, end = self._rows
        data = self._buffer()
        if len(start) and _uniform_rows(data, start, end):
            width = int(end[0] - start[0])
            records = np.frombuffer(data, dtype=np.uint8, count=len(start) * width,
                                    offset=int(start[0])).reshape(len(start), width)
            return 'fixed', records
        if not len(start):
            return 'lines', np.empty(0, dtype=object)
        first = int(start[0])
        pieces = data[first:int(end[-1])].split(b'\n')
        lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
        offsets = np.concatenate(([0], np.cumsum(lengths + 1)[:-1]))
        store = np.empty(len(pieces), dtype=object)
        store[:] = pieces
        return 'lines', store[np.searchsorted(offsets, start - first)]

    # ------------------------------------------------------------------ internals

    def _buffer(self):
        """The file contents, mapping the file again if it was closed."""
        if self._data is None:
            data, stat = _map(self.path)
            if self._stat is not None and (stat.st_size, stat.st_mtime_ns) != \
                    (self._stat.st_size, self._stat.st_mtime_ns):
                raise StarError(self.path, 'file changed since it was read')
            self._data = data
        return self._data

    def _scan(self, columns=()):
        """Find the rows, and the values of ``columns`` (one pass over the body).

        Returns {column index: (n, width) uint8 values}; empty on the slow path.
        """
        if self._rows is not None and (self._slow or not columns):
            return {}
        data = self._buffer()
        if not self._slow:
            try:
                rows, values = tokenise(self.path, data, self._body_start,
                                         len(self.columns), list(columns))
            except SlowPath:
                self._slow = True
            else:
                self._rows = rows
                return values
        self._rows = _significant_line_spans(data, self._body_start)
        return {}

    def _read_slow(self, names):
        start, end = self._rows
        data = self._buffer()
        if not len(start):
            return pd.DataFrame({n: pd.Series(dtype=str) for n in names})
        body = b'\n'.join(data[int(s):int(e)].rstrip(b'\r\n') for s, e in zip(start, end))
        quote = "'" if b'"' not in body and b"'" in body else '"'
        try:
            frame = pd.read_csv(BytesIO(body), sep=r'\s+', header=None, names=self.columns,
                                usecols=names, comment='#', quotechar=quote, engine='c',
                                keep_default_na=False, dtype=str)
        except pd.errors.ParserError as exc:
            raise StarError(self.path, f'data_{self.block}: cannot parse the loop ({exc})') from None
        if len(frame) != len(start):
            raise StarError(self.path, f'data_{self.block}: {len(frame)} rows parsed from '
                                       f'{len(start)} lines')
        return frame


# ---------------------------------------------------------------------- header parsing

def _map(path):
    """Memory-map a file read-only; return (buffer, os.stat_result)."""
    try:
        with open(path, 'rb') as fh:
            stat = os.fstat(fh.fileno())
            if stat.st_size == 0:
                raise StarError(path, 'empty file: not a STAR file')
            if hasattr(mmap, 'MAP_POPULATE'):   # Linux: fault the pages in at once
                return mmap.mmap(fh.fileno(), 0, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE,
                                 prot=mmap.PROT_READ), stat
            return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ), stat
    except FileNotFoundError:
        raise StarError(path, 'file not found') from None
    except IsADirectoryError:
        raise StarError(path, 'is a folder, not a STAR file') from None


def _block_name(data, start):
    """Block name and the offset of the line after the ``data_`` line."""
    nl = data.find(b'\n', start)
    nl = len(data) if nl < 0 else nl
    word = data[start:nl].split()[0]
    return word[5:].decode('utf-8', 'replace'), min(nl + 1, len(data))


def _parse_loop_header(data, pos):
    """Column labels and the offset of the first row, or None for a key-value block."""
    columns = []
    in_loop = False
    size = len(data)
    while pos < size:
        nl = data.find(b'\n', pos)
        nl = size if nl < 0 else nl
        line = data[pos:nl].strip()
        if not line or line.startswith(b'#'):
            pos = nl + 1
            continue
        if not in_loop:
            if not line.startswith(b'loop_'):
                return None
            in_loop = True
        elif line.startswith(b'_'):
            columns.append(line.split()[0][1:].decode('utf-8', 'replace'))
        else:
            return columns, pos
        pos = nl + 1
    return (columns, size) if in_loop else None


def _version_before(data, block_start):
    """The ``# version NNN`` number on the lines just before a block, or None."""
    for line in reversed(data[max(0, block_start - 512):block_start].split(b'\n')):
        words = line.split()
        if len(words) >= 3 and words[0] == b'#' and words[1] == b'version':
            return words[2].decode()
        if len(words) >= 2 and words[0] == b'#version':
            return words[1].decode()
        if words and not words[0].startswith(b'#'):
            return None
    return None


def _add_labels(header, n_columns, labels):
    """The header with loop labels appended after its last label line (``_label #N``)."""
    last = header.rfind(b'\n_')
    last = 0 if last < 0 and header.startswith(b'_') else last + 1
    end = header.find(b'\n', last)
    end = len(header) if end < 0 else end + 1
    added = b''.join(f'_{label} #{n_columns + i + 1}\n'.encode()
                     for i, label in enumerate(labels))
    return header[:end] + added + header[end:]


def _format_values(values):
    """Text of each value: integers as they are, other numbers ``%.6f``, text as it is;
    formatted once per distinct value."""
    values = np.asarray(values)
    if values.dtype.kind in 'iub':
        values = values.astype(np.int64)
        fmt = '%d'
    elif values.dtype.kind == 'f':
        fmt = '%.6f'
    else:
        fmt = '%s'
    uniques, inverse = np.unique(values, return_inverse=True)
    texts = [(fmt % v).encode() for v in uniques.tolist()]
    if any(not t or any(c in t for c in b' \t\n') for t in texts):
        raise ValueError('extra column values must not be empty or hold whitespace')
    return texts, inverse


def _column_bytes(columns, n):
    """(n, width) uint8: ``' value1 value2 ...\n'`` per row, right-padded with spaces."""
    parts = []
    for values in columns.values():
        texts, inverse = _format_values(values)
        width = max(map(len, texts), default=0) + 1
        table = np.full((len(texts), width), ord(' '), dtype=np.uint8)
        for i, text in enumerate(texts):
            table[i, 1:1 + len(text)] = np.frombuffer(text, dtype=np.uint8)
        parts.append(table[inverse] if n else np.zeros((0, width), dtype=np.uint8))
    parts.append(np.full((n, 1), ord('\n'), dtype=np.uint8))
    return np.hstack(parts)


def _uniform_rows(data, start, end):
    """Whether rows are contiguous, of one length, and each ends with a newline."""
    lengths = end - start
    return (lengths.min() == lengths.max() and data[int(end[-1]) - 1] == 10
            and bool(np.all(start[1:] == end[:-1])))


def _significant_line_spans(data, body_start):
    """Row spans of the slow path: non-blank, non-comment lines up to the next block."""
    body_end = next_data_line(data, body_start)
    body_end = len(data) if body_end < 0 else body_end
    starts, ends, pos = [], [], body_start
    for line in data[body_start:body_end].split(b'\n'):
        stripped = line.strip()
        if stripped and not stripped.startswith(b'#'):
            starts.append(pos)
            ends.append(min(pos + len(line) + 1, body_end))
        pos += len(line) + 1
    return np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
