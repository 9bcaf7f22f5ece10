"""The one STAR writer: RELION's layout, each column formatted at once with numpy.

Numbers right-aligned and text left-aligned at one width per column, so all rows of a table
have one length (:class:`~.table.StarTable` copies subsets as blocks of bytes); floats
``%.6f`` but ``%.6e`` for ``0 < |x| < 1e-3`` and ``|x| >= 1e5``, as RELION. Text is quoted
where STAR needs it; text that STAR (or starfile, reading it back) cannot hold is refused.
"""
import re
from collections import namedtuple
from contextlib import contextmanager

import numpy as np
import pandas as pd

from .._atomic import atomic_path
from ..errors import StarError
from ..relion import REQUIRED_OPTICS, check_optics, format_image_names, upgrade_to_relion31

_ROWS_PER_BLOCK = 100_000
_SPACE, _ZERO = ord(' '), ord('0')
_NEEDS_QUOTES = re.compile(r'\s|^$|#|^_|^data_|^loop_')
# The same test (and quote characters) on values joined by NUL: whether any value needs care.
_UNUSUAL = re.compile(r'[\s"\'#]|\x00(?:\x00|_|data_|loop_)')
_FIXED_RE = re.compile(r'%\.(\d)f')


#: RELION image names ``index@path`` as parts (1-based indices, one path per row).
ImageNames = namedtuple('ImageNames', 'indices paths')


def write_star(path, blocks, version='30001', float_format='%.6f'):
    """Write data blocks to a STAR file, atomically (or to a binary file open for writing).

    ``blocks``: name (without ``data_``) -> loop (a DataFrame, or a dict of columns: arrays
    or :class:`ImageNames`) or key-value block (a dict of single values), in file order.
    ``version``: ``# version <version>`` before every block (RELION 3.1+), or None.
    ``float_format``: printf format of floats; ``'%.Nf'`` gets ``'%.Ne'`` where RELION does.
    ValueError or TypeError for invalid names, blocks or text; the file is left as it was.
    """
    where = output_name(path)
    with open_output(path) as fh:
        for name, block in blocks.items():
            if any(ch.isspace() for ch in name):
                raise ValueError(f'{where}: block name {name!r} contains whitespace')
            head = f'\n# version {version}\n\n' if version else '\n'
            fh.write(f'{head}data_{name}\n\n'.encode())
            if isinstance(block, pd.DataFrame) or (isinstance(block, dict) and any(
                    isinstance(v, ImageNames) or np.ndim(v) for v in block.values())):
                _write_loop(fh, where, name, block, float_format)
            elif isinstance(block, dict):
                for key, value in block.items():
                    text = Column(where, name, key, [value], float_format).text()
                    fh.write(f'_{key}\t\t\t'.encode() + text.tobytes().strip() + b'\n')
                fh.write(b'\n')
            else:
                raise TypeError(f'{where}: block data_{name} is a {type(block).__name__}, '
                                f'expected a DataFrame or a dict')


def write_particles_star(path, particles, optics=None, version='30001', image_size=None):
    """Write a RELION 3.1+ particle file: ``data_optics`` then ``data_particles``.

    ``optics`` is written as given (group names and ``rlnImageDimensionality`` added when
    absent); without it, it is derived from per-particle columns (``image_size``: the box
    size when there is no ``rlnImageSize``; :func:`~..relion.upgrade_to_relion31`).
    :class:`StarError` if the optics lack a column RELION needs or a particle's group.
    """
    try:
        if optics is None:
            particles, optics = upgrade_to_relion31(particles, image_size=image_size)
        else:
            particles, optics = check_optics(particles, optics)
            missing = [c for c in REQUIRED_OPTICS if c not in optics.columns]
            if missing:
                raise ValueError(f'the optics table lacks {", ".join(missing)} (RELION needs them)')
            if 'rlnImageDimensionality' not in optics.columns:
                optics['rlnImageDimensionality'] = 2
    except ValueError as exc:
        raise StarError(output_name(path), str(exc)) from None
    write_star(path, {'optics': optics, 'particles': particles}, version=version)


@contextmanager
def open_output(out):
    """``out`` itself when it is an open binary file, else a new file at the path ``out``
    (:func:`atomic_path`: in place only once the ``with`` block ends without error)."""
    if hasattr(out, 'write'):
        yield out
        return
    with atomic_path(out) as tmp, open(tmp, 'wb') as fh:
        yield fh


def output_name(out):
    """The path to name in messages about ``out`` (a path or an open file)."""
    return getattr(out, 'name', 'STAR file') if hasattr(out, 'write') else out


def _write_loop(fh, path, name, table, float_format):
    labels = list(table.columns if isinstance(table, pd.DataFrame) else table)
    bad = [c for c in labels if not isinstance(c, str) or not c or any(ch.isspace() for ch in c)]
    if bad or len(set(labels)) < len(labels):
        what = f'an invalid column name {bad[0]!r}' if bad else 'a column twice'
        raise ValueError(f'{path}: data_{name} has {what}')
    columns = [Column(path, name, c, table[c], float_format) for c in labels]
    fh.write(b'loop_\n' + ''.join(f'_{c} #{i}\n' for i, c in enumerate(labels, 1)).encode())
    for start in range(0, len(columns[0]) if columns else 0, _ROWS_PER_BLOCK):
        fh.write(rows_text([c.text(start, start + _ROWS_PER_BLOCK) for c in columns]))
    fh.write(b'\n')


def rows_text(fields, prefix=False):
    """Rows from (n, width_i) uint8 column texts: separated by spaces, ending with a newline
    (and starting with a space when ``prefix``)."""
    n = len(fields[0]) if fields else 0
    space = np.full((n, 1), _SPACE, dtype=np.uint8)
    parts = ([space] if prefix else []) + [part for text in fields for part in (text, space)]
    return np.hstack(parts[:-1] + [np.full((n, 1), ord('\n'), dtype=np.uint8)])


class Column:
    """One column as text of one width, formatted block by block (:meth:`text`): numbers
    right-aligned, text from its distinct values, image names from their parts."""

    def __init__(self, path, block, label, values, float_format='%.6f'):
        self._where = f'{path}: data_{block} column _{label}'
        self._codes = self._numbers = None
        if isinstance(values, ImageNames):
            indices, paths = np.asarray(values.indices, np.int64), np.asarray(values.paths, object)
            if len(indices) != len(paths) or (len(indices) and indices.min() < 1):
                raise ValueError(f'{self._where}: image indices must be positive, one per path')
            if not _UNUSUAL.search('\0'.join(f'0@{p}' for p in pd.unique(paths))):
                self._numbers = indices, max(6, len(str(indices.max(initial=1))))
                self._length = len(indices)
                self._set_texts(paths, '@{}'.format)
                return
            values = format_image_names(indices, paths)     # names that need quotes: as text
        series = values if isinstance(values, pd.Series) else pd.Series(values)
        self._length, kind = len(series), series.dtype.kind
        fixed = _FIXED_RE.fullmatch(float_format)
        if kind == 'b' or (kind in 'iu' and not series.hasnans):
            self._set_texts(series.to_numpy(dtype=np.int64), right=True)
        elif kind in 'fiu' and fixed:
            self._floats = series.to_numpy(dtype=np.float64, na_value=np.nan)
            self._decimals = int(fixed.group(1))
            self._width = _float_width(self._floats, self._decimals)
            if len(pd.unique(self._floats[:1000])) < 250:   # few values: each formatted once
                self._codes, uniques = pd.factorize(self._floats, use_na_sentinel=False)
                self._table = _float_text(uniques, self._decimals, self._width)
        elif kind in 'fiu':
            self._set_texts(series.to_numpy(dtype=np.float64, na_value=np.nan),
                            float_format.__mod__, right=True)
        else:
            values = series.to_numpy(dtype=object)
            self._set_texts(np.where(pd.isna(values), '', values), quote=True)

    def _set_texts(self, values, to_text=str, right=False, quote=False):
        self._codes, uniques = pd.factorize(values)
        texts = [to_text(v) for v in uniques.tolist()]
        if quote and _UNUSUAL.search('\0' + '\0'.join(texts) + '\0'):
            texts = [self._quote(t) for t in texts]
        self._table = _text_matrix(texts, right)

    def __len__(self):
        return self._length

    def text(self, start=0, stop=None):
        """Rows ``start:stop`` as a (rows, width) uint8 array."""
        if self._codes is None:
            return _float_text(self._floats[start:stop], self._decimals, self._width)
        text = self._table[self._codes[start:stop]]
        if self._numbers is None:
            return text
        indices, digits = self._numbers     # the table holds '@path'
        return np.hstack((_digits(indices[start:stop], digits), text))

    def _quote(self, text):
        if any(ch in text for ch in '\t\n\r"\''):
            raise ValueError(f'{self._where}: value {text!r} cannot be written in a STAR file: '
                             f'it contains a tab or a line break, or a quote (starfile reads '
                             f'both quote characters as ")')
        return f'"{text}"' if _NEEDS_QUOTES.search(text) else text


def _text_matrix(texts, right=False):
    """Texts as a (n, width) uint8 array padded with spaces (left or right-aligned)."""
    encoded = [t.encode() for t in texts]
    width = max([len(b) for b in encoded] + [1])
    padded = [b.rjust(width) if right else b.ljust(width) for b in encoded] or [b' ' * width]
    return np.array(padded).view(np.uint8).reshape(len(padded), width).copy()


def _digits(values, width):
    """Non-negative integers as (n, width) zero-padded decimal digits."""
    if values.max(initial=0) < 1 << 31:
        values = values.astype(np.int32)      # divides faster
    out = np.empty((len(values), width), dtype=np.uint8)
    for k in range(width):
        values, digit = np.divmod(values, 10)
        out[:, width - 1 - k] = _ZERO + digit
    return out


def _plain(values):
    """Values ``%.Nf`` shows well (RELION writes the others in ``e`` notation)."""
    magnitude = np.abs(values)
    return (magnitude == 0) | ((magnitude >= 1e-3) & (magnitude < 1e5))


def _odd_text(value, decimals):
    return (('%.*e' if np.isfinite(value) else '%.*f') % (decimals, value)).encode()


def _float_width(values, decimals):
    plain = _plain(values)
    top = np.abs(values[plain]).max(initial=0)
    need = len('%.*f' % (decimals, top)) + int(np.signbit(values[plain]).any())
    return max([need] + [len(_odd_text(v, decimals)) for v in values[~plain].tolist()])


def _float_text(values, decimals, width):
    """Right-aligned ``%.<decimals>f`` text of floats, ``e`` notation where RELION uses it."""
    plain = _plain(values)
    fixed = np.where(plain, values, 0.0)
    scaled = fixed * 10 ** decimals
    whole = np.rint(scaled)
    # Far from a half, rounding the scaled value rounds the decimal one as printf does.
    for i in np.flatnonzero(np.abs(np.abs(scaled - np.trunc(scaled)) - 0.5) < 1e-3).tolist():
        whole[i] = float(('%.*f' % (decimals, fixed[i])).replace('.', ''))
    integer, fraction = np.divmod(np.abs(whole).astype(np.int64), 10 ** decimals)
    n_int = np.searchsorted(10 ** np.arange(1, 19, dtype=np.int64), integer, side='right') + 1
    out = np.full((len(values), width), _SPACE, dtype=np.uint8)
    end = width - decimals - (1 if decimals else 0)
    if decimals:
        out[:, end + 1:] = _digits(fraction, decimals)
        out[:, end] = ord('.')
    keep = np.arange(end)[None, :] >= (end - n_int)[:, None]
    out[:, :end] = np.where(keep, _digits(integer, end), _SPACE)
    negative = np.flatnonzero(np.signbit(fixed))
    out[negative, end - n_int[negative] - 1] = ord('-')
    for row in np.flatnonzero(~plain).tolist():
        out[row] = np.frombuffer(_odd_text(values[row], decimals).rjust(width), np.uint8)
    return out
