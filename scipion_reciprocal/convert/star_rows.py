"""Write large RELION particle tables as STAR files with one fixed width per column.

Each column is formatted once with numpy (digits of scaled integers; text padded to the
column's widest value), a block of rows at a time, so a million particles take seconds and
every row has the same length: :class:`~scipion_reciprocal.formats.star_table.StarTable`
then copies subsets of the rows byte for byte.  Numbers are written as ``'%.6f'`` writes
them; the few that format would not show well (NaN, ``0 < |x| < 1e-3``, ``|x| >= 1e6``) are
formatted one by one, in ``'%.6e'`` like :func:`..formats.star.write_star` does.  Text
columns are written from their distinct values; image names can be given as their parts
(:class:`ImageNames`), so that no string is built per row.
"""
import re

import numpy as np
import pandas as pd

from ..formats._atomic import atomic_path
from ..formats.star import format_image_names

DECIMALS = 6
ROWS_PER_BLOCK = 100_000
_SPACE, _ZERO = ord(" "), ord("0")
_NEEDS_QUOTES = re.compile(r"\s|^$|#|^[_\"']|^data_|^loop_")


class ImageNames:
    """RELION image names ``index@path`` as their parts: 1-based ``indices`` and ``paths``
    (one per row).  Indices are zero-padded to 6 digits (more when some need more)."""

    def __init__(self, indices, paths):
        self.indices = np.asarray(indices, dtype=np.int64)
        self.paths = np.asarray(paths, dtype=object)
        if len(self.indices) != len(self.paths):
            raise ValueError("%d image indices for %d paths" % (len(self.indices), len(self.paths)))
        if len(self.indices) and self.indices.min() < 1:
            raise ValueError("image indices must be positive integers")

    def __len__(self):
        return len(self.indices)


def write_fixed_star(path, particles, optics, version="30001"):
    """Write ``data_optics`` and ``data_particles`` (RELION 3.1+), atomically.

    Each table is a DataFrame or a mapping of column name -> values (arrays, or
    :class:`ImageNames` for ``rlnImageName``).
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        for name, table in (("optics", optics), ("particles", particles)):
            labels = "".join("_%s #%d \n" % (c, i) for i, c in enumerate(table, 1))
            fh.write(("\n# version %s\n\ndata_%s\n\nloop_ \n%s" % (version, name, labels)).encode())
            columns = [_Column(table[c]) for c in table]
            rows = len(columns[0]) if columns else 0
            for start in range(0, rows, ROWS_PER_BLOCK):
                stop = min(start + ROWS_PER_BLOCK, rows)
                space = np.full((stop - start, 1), _SPACE, np.uint8)
                parts = []
                for column in columns:
                    parts += [column.text(start, stop), space]
                parts[-1] = np.full((stop - start, 1), ord("\n"), np.uint8)
                fh.write(np.hstack(parts).tobytes())
            fh.write(b"\n")


class _Column:
    """One column, formatted block by block at a width fixed for the whole column."""

    def __init__(self, values):
        self._codes = self._names = None
        self._odd, self._odd_texts = np.empty(0, dtype=np.int64), []
        if isinstance(values, ImageNames) and self._set_image_names(values):
            return
        if isinstance(values, ImageNames):  # paths that need quotes: whole names as text
            values = format_image_names(values.indices, values.paths)
        values = values.to_numpy() if hasattr(values, "to_numpy") else np.asarray(values)
        self._length = len(values)
        kind = values.dtype.kind
        if kind in "iub":
            self._values, self._scale = values.astype(np.int64, copy=False), 1
        elif kind == "f":
            self._values, self._scale = values.astype(np.float64, copy=False), 10 ** DECIMALS
            magnitude = np.abs(self._values)
            with np.errstate(invalid="ignore"):
                plain = (magnitude == 0) | ((magnitude >= 1e-3) & (magnitude < 1e6))
            del magnitude
            # Values '%.6f' would not show well (NaN, tiny, huge) are formatted one by one.
            self._odd = np.flatnonzero(~plain)
            if len(self._odd):
                self._odd_texts = [_float_text(v) for v in self._values[self._odd].tolist()]
                self._values = np.where(plain, self._values, 0.0)
        else:  # text, from its distinct values (quoted where needed); missing values: ""
            self._codes, uniques = pd.factorize(values)
            texts = [_star_text(str(v)) for v in uniques.tolist()] + [_star_text("")]
            self._table = _text_matrix(texts)
            return
        top = np.abs(self._values).max(initial=0)
        if kind == "f":
            digits, negative = len("%.*f" % (DECIMALS, top)), np.signbit(self._values).any()
        else:
            digits, negative = len(str(int(top))), (self._values < 0).any()
        self._width = max([digits + int(negative)] + [len(t) for t in self._odd_texts])

    def _set_image_names(self, names):
        """Format ``names`` from their parts; False when a path needs quotes."""
        codes, paths = pd.factorize(names.paths)
        if (codes < 0).any() or any(_NEEDS_QUOTES.search("0@" + str(p)) for p in paths):
            return False
        self._length = len(names)
        self._names = names.indices, max(6, len(str(names.indices.max(initial=1))))
        self._codes, self._table = codes, _text_matrix([str(p) for p in paths])
        return True

    def __len__(self):
        return self._length

    def text(self, start, stop):
        """Rows ``start:stop`` as a (rows, width) uint8 array."""
        if self._names is not None:
            indices, digits = self._names
            out = np.empty((stop - start, digits + 1 + self._table.shape[1]), dtype=np.uint8)
            number = indices[start:stop]
            for k in range(digits):
                number, digit = np.divmod(number, 10)
                out[:, digits - 1 - k] = _ZERO + digit
            out[:, digits] = ord("@")
            out[:, digits + 1:] = self._table[self._codes[start:stop]]
            return out
        if self._codes is not None:
            return self._table[self._codes[start:stop]]
        out = _number_text(self._scaled(start, stop), self._scale, self._width)
        if len(self._odd):
            first, last = np.searchsorted(self._odd, [start, stop])
            for row, text in zip(self._odd[first:last], self._odd_texts[first:last]):
                out[row - start] = np.frombuffer(text.rjust(self._width).encode(), np.uint8)
        return out

    def _scaled(self, start, stop):
        """Values as integers in units of the last digit, rounded as printf rounds."""
        values = self._values[start:stop]
        if self._scale == 1:
            return values, values < 0
        scaled = values * self._scale
        rounded = np.rint(scaled)
        # Far from a half, rounding the scaled value rounds the decimal one the same way;
        # the few others are rounded by Python's formatting.
        near = np.flatnonzero(np.abs(np.abs(scaled - np.trunc(scaled)) - 0.5) < 1e-3)
        rounded[near] = [float(("%.*f" % (DECIMALS, v)).replace(".", ""))
                         for v in values[near].tolist()]
        return rounded.astype(np.int64), np.signbit(values)


def _float_text(value):
    if value != value or value in (np.inf, -np.inf):
        return str(value)
    extreme = value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5)
    return ("%.*e" if extreme else "%.*f") % (DECIMALS, value)


def _star_text(text):
    """A text value, quoted where STAR needs it."""
    if not _NEEDS_QUOTES.search(text):
        return text
    if any(ch in text for ch in "\t\n\r") or ('"' in text and "'" in text):
        raise ValueError("text value %r cannot be written in a STAR file" % text)
    return "'%s'" % text if '"' in text else '"%s"' % text


def _text_matrix(texts):
    """Texts as a (n, width) uint8 array, left-aligned and padded with spaces."""
    encoded = np.array([t.encode("utf-8") for t in texts] or [b""])
    width = max(encoded.dtype.itemsize, 1)
    matrix = encoded.astype("S%d" % width).view(np.uint8).reshape(len(encoded), width).copy()
    matrix[matrix == 0] = _SPACE
    return matrix


def _digit_count(magnitude):
    count = np.ones(len(magnitude), dtype=np.int64)
    rest = magnitude // 10
    while rest.any():
        count += rest > 0
        rest //= 10
    return count


def _number_text(scaled, scale, width):
    """Right-aligned ``%d`` (scale 1) or ``%.6f`` text of scaled integers."""
    integers, negative = scaled
    whole = np.abs(integers)
    if whole.max(initial=0) < 2 ** 31:
        whole = whole.astype(np.int32)  # faster digits
    out = np.empty((len(whole), width), dtype=np.uint8)
    end = width
    if scale > 1:
        whole, fraction = np.divmod(whole, scale)
        fraction = fraction.astype(np.int32)
        for k in range(DECIMALS):
            fraction, digit = np.divmod(fraction, 10)
            out[:, width - 1 - k] = _ZERO + digit
        end = width - 1 - DECIMALS
        out[:, end] = ord(".")
    digits = _digit_count(whole)
    sign = np.where(negative, ord("-"), _SPACE).astype(np.uint8)
    for k in range(end):
        whole, digit = np.divmod(whole, 10)
        out[:, end - 1 - k] = np.where(k < digits, _ZERO + digit,
                                       np.where(k == digits, sign, _SPACE))
    return out
