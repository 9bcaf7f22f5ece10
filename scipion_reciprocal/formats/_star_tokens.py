"""Vectorised tokenising of STAR loop bodies and conversion of values to numbers.

Used by :class:`scipion_reciprocal.formats.star_table.StarTable`. A body is processed in
chunks of whole lines; values come out as (n, width) uint8 arrays padded with bytes <= 32,
which the parsers turn into int64, float64 or fixed-width bytes arrays.
"""

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import as_strided

from .errors import StarError

__all__ = ['tokenise', 'convert', 'parse_int_tokens', 'parse_float_tokens', 'text_values',
           'series_to_array', 'next_data_line', 'SlowPath']

_CHUNK = 1 << 22            # bytes tokenised at a time
_MAX_TOKEN = 1 << 16        # longest value accepted (bytes)
_WS = 32                    # bytes <= 32 (space, tab, CR, LF) separate values
_QUOTES = (ord('"'), ord("'"))


class SlowPath(Exception):
    """The body has quotes or comments: parse it with pandas."""


def next_data_line(data, pos):
    """Offset of the next line that starts a ``data_`` block, or -1."""
    while True:
        pos = data.find(b'data_', pos)
        if pos < 0:
            return -1
        line_start = data.rfind(b'\n', 0, pos) + 1
        if not data[line_start:pos].strip():
            return line_start
        pos += 5


def tokenise(path, data, body_start, ncols, columns):
    """Row spans and the values of ``columns``, in one pass over the body.

    The body ends at the next ``data_`` line (trailing comment lines excluded) or at the
    end of the file. Values come as (n, width) uint8 arrays, padded with bytes <= 32 on
    either side. Raises :class:`SlowPath` on quotes or comments inside the body.
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    size = len(arr)
    buffers = _Buffers(_CHUNK)
    row_start, row_end = [], []
    values = {c: [] for c in columns}
    line_number = data[:body_start].count(b'\n') + 1
    pos = body_start
    while pos < size:
        stop = min(pos + _CHUNK, size)
        if stop < size:
            cut = data.rfind(b'\n', pos, stop)
            stop = cut + 1 if cut >= pos else (data.find(b'\n', stop) + 1 or size)
        chunk = arr[pos:stop]
        buffers.reserve(len(chunk))
        done = _fixed_layout_chunk(chunk, ncols, columns, buffers)
        if done is None:
            done = _general_chunk(path, data, chunk, pos, line_number, ncols, columns, buffers)
        starts, ends, cols, n_lines, end_here = done
        row_start.append(starts + pos)
        row_end.append(ends + pos)
        for c in columns:
            values[c].append(cols[c])
        if end_here is not None:
            break
        line_number += n_lines
        pos = stop
    empty = np.zeros(0, dtype=np.int64)
    rows = (np.concatenate(row_start) if row_start else empty,
            np.concatenate(row_end) if row_end else empty)
    return rows, {c: _stack_padded(v) for c, v in values.items()}


class _Buffers:
    """Scratch boolean arrays reused from chunk to chunk."""

    def __init__(self, size):
        self.size = 0
        self.reserve(size)

    def reserve(self, size):
        if size > self.size:
            self.size = size
            self.ws = np.empty(size + 2, dtype=bool)
            self.flag = np.empty(size + 1, dtype=bool)


def _fixed_layout_chunk(chunk, ncols, columns, buffers):
    """Fast path for rows of one length whose values end at the same columns (RELION's
    right-aligned fixed-width output): values are sliced, nothing is searched. Only the
    part of the rows up to the last column read is checked; other values are never parsed
    (rows are copied verbatim when written).

    Returns (row starts, row ends, {column: values}, number of lines, None), or None when
    the chunk does not have that layout.
    """
    m = len(chunk)
    nl = np.flatnonzero(chunk[:min(m, 1 << 16)] == 10)
    if ncols < 3 or not len(nl) or m % (nl[0] + 1):
        return None
    width = int(nl[0]) + 1
    n = m // width
    grid = chunk.reshape(n, width)
    if not (grid[:, -1] == 10).all():
        return None
    if np.count_nonzero(np.equal(chunk, 10, out=buffers.flag[:m])) != n:
        return None     # a line end inside a row
    first_ws = grid[0] <= _WS
    template = np.zeros(width, dtype=bool)
    template[:-1] = first_ws[1:] & ~first_ws[:-1]      # a value ends before a blank
    stops = np.flatnonzero(template) + 1
    if len(stops) != ncols:
        return None
    if not columns:
        return np.arange(n, dtype=np.int64) * width, np.arange(1, n + 1) * width, {}, n, None
    # Only the values read are checked: every row must have the same value ends as the
    # first one up to the end of the last column read (ncols >= 3 rules out data_,
    # loop_ and label lines, which hold fewer values).
    span = int(stops[max(columns)]) + 1
    ws = np.less_equal(grid[:, :span], _WS, out=buffers.ws[:n * span].reshape(n, span))
    ends = np.greater(ws[:, 1:], ws[:, :-1],
                      out=buffers.flag[:n * (span - 1)].reshape(n, span - 1))
    if np.count_nonzero(np.not_equal(ends, template[:span - 1], out=ends)):
        return None
    bounds = np.concatenate(([0], stops))
    cols = {}
    for c in columns:
        values = _trim(grid[:, bounds[c]:bounds[c + 1]]).copy()
        if _quoted_values(values):
            return None     # a value starts with a quote or '#': the general path decides
        cols[c] = values
    offsets = np.arange(n, dtype=np.int64) * width
    return offsets, offsets + width, cols, n, None


def _general_chunk(path, data, chunk, pos, line_number, ncols, columns, buffers):
    """Tokenise a chunk of whole lines of any layout.

    Returns (row starts, row ends, {column: values}, number of lines, offset where the
    body ends or None).
    """
    m = len(chunk)
    w = buffers.ws[:m + 1]
    w[0] = True
    np.less_equal(chunk, _WS, out=w[1:])
    s = buffers.flag[:m]
    np.greater(w[:-1], w[1:], out=s)
    starts = np.flatnonzero(s)
    newlines = np.flatnonzero(np.equal(chunk, 10, out=s))
    if chunk[-1] != 10:
        newlines = np.append(newlines, m)
    last_token = np.searchsorted(starts, newlines, side='right')
    first_token = np.concatenate(([0], last_token[:-1]))
    counts = last_token - first_token
    filled = counts > 0
    lead = np.zeros(len(counts), dtype=np.int64)
    lead[filled] = starts[first_token[filled]]
    special = filled & ((counts != ncols) | _special_start(chunk, lead))
    end_here = None
    n_tokens = len(starts)
    if special.any():
        k = int(np.argmax(special))
        end_here = _special_line(path, data, pos, lead[k], line_number + k, counts[k], ncols)
        filled[k:] = False
        n_tokens = int(first_token[k])
    line_first = np.concatenate(([0], newlines[:-1] + 1))
    grid = starts[:n_tokens].reshape(-1, ncols)
    cols = {}
    for c in columns:
        col = grid[:, c]
        if len(col) and np.isin(chunk[col], _QUOTES).any():
            raise SlowPath
        cols[c] = _gather_tokens(chunk, col)
    return line_first[filled], np.minimum(newlines[filled] + 1, m), cols, len(newlines), end_here


def _stack_padded(blocks):
    """Concatenate (n_i, width_i) arrays, padding narrower ones with zeros on the right."""
    if not blocks:
        return np.zeros((0, 1), dtype=np.uint8)
    width = max(b.shape[1] for b in blocks)
    if all(b.shape[1] == width for b in blocks):
        return np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    out = np.zeros((sum(len(b) for b in blocks), width), dtype=np.uint8)
    row = 0
    for b in blocks:
        out[row:row + len(b), :b.shape[1]] = b
        row += len(b)
    return out


def _special_start(chunk, lead):
    """Lines whose first value starts a comment, a quote, a label, ``loop_`` or ``data_``."""
    first = chunk[lead]
    special = np.isin(first, (ord('#'), ord('_'), *_QUOTES))
    for word in (b'data_', b'loop_'):
        cand = np.flatnonzero(first == word[0])
        if len(cand):
            ok = np.ones(len(cand), dtype=bool)
            for i, byte in enumerate(word[1:], 1):
                at = np.minimum(lead[cand] + i, len(chunk) - 1)
                ok &= chunk[at] == byte
            special[cand[ok]] = True
    return special


def _special_line(path, data, chunk_pos, lead, line_number, count, ncols):
    """Decide what a line that is not a plain row means: end of the body, or an error."""
    start = chunk_pos + int(lead)
    nl = data.find(b'\n', start)
    line = data[start:len(data) if nl < 0 else nl]
    if line.startswith(b'data_'):
        return start
    if line.startswith(b'#'):
        following = next_data_line(data, start)
        rest = data[start:len(data) if following < 0 else following]
        if all(not ln.strip() or ln.strip().startswith(b'#') for ln in rest.split(b'\n')):
            return start
        raise SlowPath
    if b'"' in line or b"'" in line or b'#' in line:
        raise SlowPath
    if line.startswith((b'_', b'loop_')):
        raise StarError(path, f'line {line_number}: {line[:40]!r} inside a loop body')
    raise StarError(path, f'line {line_number}: {int(count)} values instead of {ncols} '
                          f'(truncated or corrupt row)')


def _gather_tokens(arr, starts):
    """Tokens starting at ``starts`` as a zero-padded (n, width) uint8 array."""
    if len(starts) == 0:
        return np.zeros((0, 1), dtype=np.uint8)
    width = 16
    while True:
        block = _window(arr, starts, width)
        is_ws = block <= _WS
        has_end = is_ws.any(axis=1)
        if has_end.all():
            break
        if width >= _MAX_TOKEN:
            raise ValueError(f'a value is longer than {_MAX_TOKEN} bytes')
        width *= 4
    lengths = is_ws.argmax(axis=1)
    width = max(int(lengths.max()), 1)
    block = block[:, :width] * (np.arange(width)[None, :] < lengths[:, None])
    return block


def _window(arr, starts, width):
    """Rows ``arr[s:s + width]`` for every start (bytes past the end read as spaces)."""
    size = len(arr)
    limit = size - width
    inside = starts <= limit
    if limit >= 0 and inside.all():
        return as_strided(arr, shape=(limit + 1, width), strides=(1, 1), writeable=False)[starts]
    out = np.empty((len(starts), width), dtype=np.uint8)
    if limit >= 0:
        view = as_strided(arr, shape=(limit + 1, width), strides=(1, 1), writeable=False)
        out[inside] = view[starts[inside]]
    tail_from = max(limit, 0)
    tail = np.full(size - tail_from + width, _WS, dtype=np.uint8)
    tail[:size - tail_from] = arr[tail_from:]
    tview = as_strided(tail, shape=(len(tail) - width + 1, width), strides=(1, 1), writeable=False)
    out[~inside] = tview[starts[~inside] - tail_from]
    return out


# ---------------------------------------------------------------------- conversion

_PAD_OR_INT = np.zeros(256, dtype=bool)
_PAD_OR_INT[list(range(_WS + 1)) + list(b'+-0123456789')] = True
_PAD_OR_FLOAT = _PAD_OR_INT.copy()
_PAD_OR_FLOAT[list(b'.eEnNaAiIfFtTyY')] = True
_SAMPLE = 256


def _trim(tokens):
    """Drop the leading and trailing columns that are padding in every row."""
    width = tokens.shape[1]
    first, last = 0, width
    while first < last and not (tokens[:, first] > _WS).any():
        first += 1
    while last > first and not (tokens[:, last - 1] > _WS).any():
        last -= 1
    return tokens[:, first:last]


def _quoted_values(values):
    """Whether a value starts with a quote or '#' (padded values, trimmed)."""
    special = (ord('"'), ord("'"), ord('#'))
    if not values.shape[1]:
        return False
    if np.isin(values[:, 0], special).any():
        return True
    if (values[:, 0] <= _WS).any():     # right-aligned values: look at every byte
        return bool(np.isin(values, special).any())
    return False


def _sample(tokens):
    return tokens if len(tokens) <= 2 * _SAMPLE else np.concatenate(
        (tokens[:_SAMPLE], tokens[-_SAMPLE:]))


def text_values(tokens):
    """Values as a fixed-width bytes array (dtype ``S``): left-aligned, padding removed."""
    tokens = _trim(np.asarray(tokens, dtype=np.uint8))
    n, width = tokens.shape
    if n == 0 or width == 0:
        return np.zeros(n, dtype='S1')
    # one value per row: padding, if any, is at the start or the end of a row
    if (tokens[:, 0] <= _WS).any() or (tokens[:, -1] <= _WS).any():
        pad = tokens <= _WS
        lead = np.argmax(~pad, axis=1)
        if lead.any():
            padded = np.zeros((n, 2 * width), dtype=np.uint8)
            padded[:, :width] = tokens
            flat = padded.ravel()
            view = as_strided(flat, shape=(len(flat) - width + 1, width), strides=(1, 1),
                              writeable=False)
            tokens = view[np.arange(n) * 2 * width + lead]
            pad = tokens <= _WS
        tokens = _trim(tokens * ~pad)
    return np.ascontiguousarray(tokens).view(f'S{max(tokens.shape[1], 1)}').ravel()


def convert(tokens, kind=None):
    """int64, float64 or bytes array from padded values.

    ``kind`` ('int', 'float' or 'text') forces a type (None when values do not fit it);
    without it the narrowest type that fits every value is taken.
    """
    tokens = _trim(tokens)
    if kind == 'text':
        return text_values(tokens)
    if kind is None:
        sample = _sample(tokens)
        if not _PAD_OR_FLOAT[sample].all():
            return text_values(tokens)
        if not _PAD_OR_INT[sample].all():
            kind = 'float'
    if kind in (None, 'int'):
        values = parse_int_tokens(tokens)
        if values is not None or kind == 'int':
            return values
    values = parse_float_tokens(tokens)
    if values is not None or kind == 'float':
        return values
    return text_values(tokens)


def _number_parts(tokens):
    """Transposed digit values and masks of padded numbers.

    Returns (digits (width, n) uint8, is_digit (width, n), ok (n,), negative (n,)), where
    ``ok`` is False for rows that are not one contiguous value with at most one leading
    sign.
    """
    cols = np.ascontiguousarray(tokens.T)
    pad = cols <= _WS
    digits = cols - np.uint8(48)
    is_digit = digits < 10
    sign = (cols == ord('-')) | (cols == ord('+'))
    begins = ~pad[0] + np.count_nonzero(pad[:-1] & ~pad[1:], axis=0)
    first = np.argmax(~pad, axis=0)
    n_sign = np.count_nonzero(sign, axis=0)
    ok = (begins == 1) & ((n_sign == 0) | ((n_sign == 1) & (np.argmax(sign, axis=0) == first)))
    negative = np.any(cols == ord('-'), axis=0)
    return digits, is_digit, ok, negative


def _mantissa(digits, is_digit):
    """Integer whose decimal digits are the masked digits, read left to right."""
    value = np.zeros(digits.shape[1], dtype=np.int64)
    for j in range(digits.shape[0]):
        mask = is_digit[j]
        np.multiply(value, 10, out=value, where=mask)
        np.add(value, digits[j], out=value, where=mask, casting='unsafe')
    return value


def parse_int_tokens(tokens):
    """Integers from (n, width) uint8 values padded with bytes <= 32, or None if a value
    is not an integer."""
    tokens = _trim(tokens)
    n, width = tokens.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if width == 0 or width > 19 or not _PAD_OR_INT[tokens].all():
        return None
    digits, is_digit, ok, negative = _number_parts(tokens)
    n_digits = np.count_nonzero(is_digit, axis=0)
    if not ok.all() or n_digits.min() < 1 or n_digits.max() > 18:
        return None
    value = _mantissa(digits, is_digit)
    return np.where(negative, -value, value)


def parse_float_tokens(tokens):
    """Floats from (n, width) uint8 values padded with bytes <= 32, or None if a value is
    not a number.

    Plain decimals (``-12.345678``) are converted exactly with integer arithmetic (an
    integer mantissa of at most 15 digits divided by a power of ten is correctly rounded,
    as Python's ``float`` is); other spellings (exponents, ``nan``, ``inf``) go through
    numpy's string conversion.
    """
    tokens = _trim(tokens)
    n, width = tokens.shape
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    if width == 0 or not _PAD_OR_FLOAT[_sample(tokens)].all():
        return None
    digits, is_digit, ok, negative = _number_parts(tokens)
    cols = tokens.T
    dot = cols == ord('.')
    n_dots = np.count_nonzero(dot, axis=0)
    n_digits = np.count_nonzero(is_digit, axis=0)
    other = ~(is_digit | dot | (cols <= _WS) | (cols == ord('-')) | (cols == ord('+')))
    simple = ok & ~other.any(axis=0) & (n_dots <= 1) & (n_digits >= 1) & (n_digits <= 15)
    is_digit &= simple
    mantissa = _mantissa(digits, is_digit)
    dot_at = np.where(n_dots > 0, np.argmax(dot, axis=0), width)
    after = np.arange(width)[:, None] > dot_at[None, :]
    decimals = np.count_nonzero(is_digit & after, axis=0)
    values = mantissa / _POWERS[decimals]
    values = np.where(negative, -values, values)
    others = np.flatnonzero(~simple)
    if len(others):
        try:
            values[others] = text_values(tokens[others]).astype(np.float64)
        except ValueError:
            return None
    return values


_POWERS = 10.0 ** np.arange(23)


def series_to_array(series, kind=None):
    """A text column of the slow path -> the array :func:`convert` would give."""
    if kind == 'text':
        return series.to_numpy().astype('S')
    numbers = pd.to_numeric(series, errors='coerce')
    if numbers.notna().all() or len(series) == 0:
        values = numbers.to_numpy()
        if kind != 'float' and series.str.fullmatch(r'[-+]?\d+').all():
            return values.astype(np.int64)
        return None if kind == 'int' else values.astype(np.float64)
    return None if kind in ('int', 'float') else series.to_numpy().astype('S')
