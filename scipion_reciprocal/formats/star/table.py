"""The fast path for large particle tables: one loop block.

A million particles (200-400 MB) take starfile about 20 s and pandas' C reader about 10
(``benchmarks/bench_star.py``). :class:`StarTable` maps the file, finds the rows and the
values of the columns asked for in one vectorised pass, and writes subsets as the header and
the rows chosen, copied verbatim. Bodies with quotes or comments (RELION writes none) or rows
of other lengths go to :func:`~.reading.read_star`, which reads them or names the wrong line.
"""
import mmap
import os
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import as_strided

from ..errors import StarError
from .reading import (iter_blocks, next_data_line, open_error, read_star, significant_lines,
                      version_before)
from .writing import Column, open_output, output_name, rows_text, write_particles_star

_CHUNK = 1 << 22            # bytes tokenised at a time
_WRITE_BLOCK = 1 << 22      # bytes of rows gathered at a time when writing subsets
_QUOTES = (ord('"'), ord("'"))


class _SlowPath(Exception):
    """The body is not plain rows: starfile reads it."""


class StarTable:
    """One loop block of a STAR file (see :meth:`open`): ``path``, ``block`` (its name),
    ``columns`` (labels), ``version`` (of the ``# version`` line before it), ``blocks_before``
    and ``header`` (the file up to the first row). The file is mapped until :meth:`close`."""

    def __init__(self, path, data, block, blocks_before, stamp):
        self.path, self.block, self.columns = path, block.name, block.labels
        self.version = version_before(data, block.start)
        self.blocks_before = blocks_before
        self.has_optics = 'optics' in blocks_before     # RELION 3.1+
        self.header = bytes(data[:block.body])
        self._data, self._body, self._stamp = data, block.body, stamp
        self._rows = None           # (starts, stops) of the rows; a stop is a line end
        self._frame = None          # slow path: the block as read_star read it
        self._width = None          # bytes per row when all rows have one length, else 0
        self.image_size = None      # box size for a RELION 3.0 file without rlnImageSize

    @classmethod
    def open(cls, path, block=None):
        """Locate a loop block (``block``: its name; None: the first loop but ``optics``)."""
        path = Path(path)
        data, stamp = _map(path)
        seen = []
        for found in iter_blocks(path, data):
            if found.kind == 'loop' and (found.name == block if block is not None
                                         else found.name != 'optics'):
                return cls(path, data, found, [b.name for b in seen], stamp)
            if found.name == block:
                raise StarError(path, f'data_{block} is not a loop block')
            seen.append(found)
        if not seen:
            raise StarError(path, 'no data_ block: not a STAR file')
        what = 'particle loop block' if block is None else f'data_{block} block'
        raise StarError(path, f'no {what} (blocks present: '
                              f'{", ".join("data_" + b.name for b in seen)})')

    def close(self):
        """Unmap the file (the rows found are kept)."""
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
        self._scan(())
        return len(self._rows[0])

    def require(self, names, what='this analysis'):
        """Raise :class:`StarError` naming the file and block if a column is absent."""
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise StarError(self.path, f'data_{self.block} has no column '
                                       f'{", ".join("_" + m for m in missing)} (needed for {what})')

    def read_raw(self, names, kinds=None):
        """Columns as arrays: label -> int64 when every value is an integer, float64 when
        every value is a number, else bytes (dtype ``S``); ``kinds`` (label -> ``'int'``,
        ``'float'`` or ``'text'``) forces a type. StarError for an absent or wrong column."""
        names, kinds = list(dict.fromkeys(names)), kinds or {}
        self.require(names, 'reading')
        tokens = self._scan([self.columns.index(n) for n in names])
        out = {name: _convert(tokens[self.columns.index(name)], kinds.get(name)) for name in names}
        wrong = next((name for name in names if out[name] is None), None)
        if wrong:
            raise StarError(self.path, f'data_{self.block}: column _{wrong} holds values '
                                       f'that are not {kinds[wrong]} numbers')
        return out

    def read_columns(self, names):
        """Columns as a DataFrame (text as ``str``), in the order given."""
        return pd.DataFrame({name: np.char.decode(v, 'utf-8').astype(object)
                             if v.dtype.kind == 'S' else v
                             for name, v in self.read_raw(names).items()})

    def optics(self):
        """The ``data_optics`` table before this block as a DataFrame, or None."""
        if not self.has_optics:
            return None
        block = next(b for b in iter_blocks(self.path, self.header) if b.name == 'optics')
        table = StarTable(self.path, self.header, block, [], None)
        return table.read_columns(table.columns)

    def _scan(self, columns):
        """Find the rows; the values of ``columns`` (indices) as (n, width) uint8 text."""
        if self._rows is not None and not columns:
            return {}
        if self._frame is None:
            data = self._mapped()
            try:
                self._rows, values = _tokenise(data, self._body, len(self.columns), columns)
                return values
            except _SlowPath:
                self._frame = read_star(self.path, [self.block]).blocks[self.block]
            spans = np.array([(s, s + n) for s, n, _ in significant_lines(
                data, self._body, next_data_line(data, self._body))], np.int64).reshape(-1, 2)
            self._rows = spans[:, 0], spans[:, 1]     # one row a line: checked by read_star
        texts = {c: np.char.encode(self._frame.iloc[:, c].astype(str).to_numpy(dtype=str),
                                   'utf-8').astype('S') for c in columns}
        return {c: t.view(np.uint8).reshape(len(t), t.itemsize) for c, t in texts.items()}

    def _mapped(self):
        if self._data is None:
            data, stamp = _map(self.path)
            if stamp != self._stamp:
                raise StarError(self.path, 'file changed since it was read')
            self._data = data
        return self._data

    def write_subset(self, out, rows, extra_columns=None):
        """Write the header and the rows chosen (indices, in that order, or a mask) byte for
        byte to ``out`` (a path, written atomically, or a binary file); return their number.

        ``extra_columns``: label (without ``_``) -> one value per row, appended as last
        columns (formatted as :func:`write_star` does). A RELION 3.0 table is written by
        :func:`write_particles_star`, which builds its optics.
        """
        rows, extra = self._check_subset(rows, extra_columns or {})
        if not self.has_optics:
            frame = self.read_columns(self.columns).iloc[rows].reset_index(drop=True)
            write_particles_star(out, frame.assign(**extra), version=self.version or '30001',
                                 image_size=self.image_size)
            return len(rows)
        header = self.header.rstrip(b'\n') + b'\n' + ''.join(
            f'_{label} #{i}\n' for i, label in enumerate(extra, len(self.columns) + 1)).encode()
        suffix = rows_text([Column(output_name(out), self.block, label, values).text()
                            for label, values in extra.items()], prefix=True) if extra else None
        with open_output(out) as fh:
            fh.write(header)
            self._write_rows(fh, rows, suffix)
        return len(rows)

    def _write_rows(self, fh, rows, suffix):
        """Write the rows, each ending with its suffix (``' values\\n'``) or a newline; as
        blocks of bytes when all rows have one length."""
        (starts, stops), data, width = self._rows, self._mapped(), self._fixed_width()
        row_bytes = width or (int(stops[0] - starts[0]) + 1 if len(starts) else 1)
        step = max(1, _WRITE_BLOCK // (row_bytes + (0 if suffix is None else suffix.shape[1])))
        for k in range(0, len(rows), step):
            part, ends = rows[k:k + step], None if suffix is None else suffix[k:k + step]
            if width:
                self._write_fixed_rows(fh, width, part, ends)
                continue
            tails = [b'\n'] * len(part) if ends is None else [row.tobytes() for row in ends]
            with memoryview(data) as view:
                lines = [view[a:b] for a, b in zip(starts[part].tolist(), stops[part].tolist())]
                fh.write(b''.join([x for pair in zip(lines, tails) for x in pair]))
                del lines

    def _fixed_width(self):
        """Bytes per row (line end included) if all rows have one length and adjoin; else 0."""
        if self._width is None:
            starts, stops = self._rows
            width = int(stops[0] - starts[0]) + 1 if len(starts) else 0
            fixed = width and self._mapped()[int(stops[-1]):int(stops[-1]) + 1] == b'\n' and \
                (stops - starts == width - 1).all() and (starts[1:] == stops[:-1] + 1).all()
            self._width = width if fixed else 0
        return self._width

    def _write_fixed_rows(self, fh, width, part, ends):
        """Write rows ``part`` of rows of ``width`` bytes, the line end replaced by ``ends``
        when given; gathered in the file's own buffer when it offers one (``reserve``, as
        :class:`~.._direct.DirectFile` does)."""
        grid = np.frombuffer(self._data, np.uint8, len(self._rows[0]) * width,
                             int(self._rows[0][0])).reshape(-1, width)
        row_bytes = width + (0 if ends is None else ends.shape[1] - 1)
        nbytes = len(part) * row_bytes
        reserved = hasattr(fh, 'reserve') and nbytes <= _WRITE_BLOCK
        out = (np.frombuffer(fh.reserve(nbytes), np.uint8) if reserved
               else np.empty(nbytes, np.uint8)).reshape(len(part), row_bytes)
        np.take(grid, part, axis=0, out=out[:, :width])
        if ends is not None:        # the suffix replaces the line end
            out[:, width - 1:] = ends
        if not reserved:
            fh.write(out)

    def _check_subset(self, rows, extra):
        """(row indices, extra columns as arrays); ValueError or IndexError if wrong."""
        rows, n = np.asarray(rows), len(self)
        if rows.dtype == bool and rows.shape != (n,):
            raise ValueError(f'{self.path}: row mask of shape {rows.shape} for {n} rows')
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64).ravel()
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise IndexError(f'{self.path}: row index out of range 0..{n - 1}')
        for label, values in extra.items():
            if not label or label.startswith('_') or any(c.isspace() for c in label):
                raise ValueError(f'{self.path}: extra column label {label!r}: give it without '
                                 f'the leading underscore and without spaces')
            if label in self.columns:
                raise ValueError(f'{self.path}: data_{self.block} already has a column _{label}')
            if len(values) != len(rows):
                raise ValueError(f'{self.path}: {len(values)} values of _{label} for '
                                 f'{len(rows)} rows')
        return rows, {label: np.asarray(values) for label, values in extra.items()}


def _map(path):
    """Memory-map a file read-only (pages read in at once on Linux): (map, (size, mtime))."""
    try:
        with open(path, 'rb') as fh:
            stat = os.fstat(fh.fileno())
            if stat.st_size == 0:
                raise StarError(path, 'empty file: not a STAR file')
            flags = mmap.MAP_SHARED | getattr(mmap, 'MAP_POPULATE', 0)
            stamp = stat.st_size, stat.st_mtime_ns
            return mmap.mmap(fh.fileno(), 0, flags=flags, prot=mmap.PROT_READ), stamp
    except OSError as exc:
        raise open_error(path, exc) from None


def _tokenise(data, body, ncols, columns):
    """((row starts, row stops), {column: (n, width) uint8 values}) of a loop body, which
    ends at the next ``data_`` line (less the comment lines before it) or the file's end.
    Raises _SlowPath on anything but rows of ``ncols`` plain values."""
    arr = np.frombuffer(data, dtype=np.uint8)
    spans, values, pos, end = [], {c: [] for c in columns}, body, False
    while pos < len(arr) and not end:
        stop = len(arr) if pos + _CHUNK >= len(arr) else (    # whole lines, about _CHUNK bytes
            data.rfind(b'\n', pos, pos + _CHUNK) + 1 or data.find(b'\n', pos + _CHUNK) + 1)
        chunk = arr[pos:stop or len(arr)]
        starts, stops, tokens, end = _tokenise_chunk(data, chunk, pos, ncols, columns)
        spans.append((starts + pos, stops + pos))
        for c in columns:
            values[c].append(tokens[c])
        pos = stop or len(arr)
    del arr, chunk
    rows = tuple(np.concatenate([s[i] for s in spans] or [np.zeros(0, np.int64)]) for i in (0, 1))
    for c, blocks in values.items():        # pad to the widest chunk's values
        width = max((b.shape[1] for b in blocks), default=1)
        values[c] = np.concatenate([b if b.shape[1] == width else np.pad(
            b, ((0, 0), (0, width - b.shape[1]))) for b in blocks] or [np.zeros((0, 1), np.uint8)])
    return rows, values


def _tokenise_chunk(data, chunk, pos, ncols, columns):
    """(row starts, row stops, {column: values}, whether the body ends) of a chunk of whole
    lines at offset ``pos``."""
    blank, flag = np.empty(len(chunk) + 1, bool), np.empty(len(chunk), bool)
    blank[0] = True
    np.less_equal(chunk, 32, out=blank[1:])
    starts = np.flatnonzero(np.greater(blank[:-1], blank[1:], out=flag))     # of the values
    newlines = np.flatnonzero(np.equal(chunk, 10, out=flag))
    if not len(chunk) or chunk[-1] != 10:
        newlines = np.append(newlines, len(chunk))
    counts = np.diff(np.searchsorted(starts, newlines), prepend=0)
    first = np.cumsum(counts) - counts
    lines = np.flatnonzero(counts)
    # rows of another length (a data_ line has one value), quotes, comments, labels
    lead_bytes = _QUOTES + tuple(b'#_d' if ncols == 1 else b'#_')
    odd = (counts[lines] != ncols) | np.isin(chunk[starts[first[lines]]], lead_bytes)
    line_starts = np.concatenate(([0], newlines[:-1] + 1))
    end = bool(odd.any())
    if end:         # the body ends at a data_ line or at comments that only lead to one
        k = int(lines[np.argmax(odd)])
        at = pos + int(line_starts[k])
        if not (data[at:at + 5] == b'data_' or data[at:at + 1] == b'#' and not any(
                significant_lines(data, at, next_data_line(data, at)))):
            raise _SlowPath
        lines, starts = lines[lines < k], starts[:first[k]]
    if data.find(b'#', pos, pos + len(chunk)) >= 0 and (chunk[starts] == ord('#')).any():
        raise _SlowPath         # a comment after the values of a row
    grid = np.column_stack((starts.reshape(-1, ncols), newlines[lines]))
    tokens = {c: _gather(chunk, grid[:, c], grid[:, c + 1]) for c in columns}
    return line_starts[lines], newlines[lines], tokens, end


def _gather(chunk, starts, following):
    """The values starting at ``starts`` (each ending before ``following``: the next value
    or the line end) as a (n, width) uint8 array padded with zeros."""
    if len(starts) and np.isin(chunk[starts], _QUOTES).any():
        raise _SlowPath
    width = int((following - starts).max(initial=1))
    windows = as_strided(chunk, (len(chunk) - width + 1, width), (1, 1))[starts]
    lengths = np.argmax(windows <= 32, axis=1)
    lengths[lengths == 0] = width       # no blank: a value running to the end of the file
    windows = windows[:, :int(lengths.max(initial=1))]
    if len(lengths) and lengths.min() < windows.shape[1]:
        windows[np.arange(windows.shape[1])[None, :] >= lengths[:, None]] = 0
    return windows


def _convert(tokens, kind=None):
    """int64, float64 or bytes array of (n, width) zero-padded values; ``kind`` ('int',
    'float', 'text') forces a type (None when the values are not of it)."""
    texts = np.ascontiguousarray(tokens).view(f'S{max(tokens.shape[1], 1)}').ravel()
    if kind == 'text':
        return texts
    if kind != 'float':
        digits = tokens - np.uint8(48)
        is_digit = digits < 10
        if tokens.shape[1] <= 18 and (is_digit | (tokens == 0)).all():
            value = np.zeros(len(tokens), np.int64)     # plain digits: Horner, vectorised
            for j in range(tokens.shape[1]):
                np.multiply(value, 10, out=value, where=is_digit[:, j])
                np.add(value, digits[:, j], out=value, where=is_digit[:, j], casting='unsafe')
            return value
        try:
            return texts.astype(np.int64)
        except (ValueError, OverflowError):
            if kind == 'int':
                return None
    try:
        return texts.astype(np.float64)
    except ValueError:
        return None if kind == 'float' else texts

