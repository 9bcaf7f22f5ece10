"""Vectorised text formatting of table columns as fixed-width byte matrices.

Each function turns one column into a ``(n, width)`` uint8 matrix of ASCII/UTF-8
bytes, right-aligned for numbers and left-aligned for text, so that rows are
joined with one ``numpy.hstack`` instead of formatting cell by cell. Numbers are
built digit by digit with integer arithmetic; only the rare values that need
exponent notation or are not finite go through Python's ``%`` formatting.
"""

import numpy as np

SPACE, MINUS, DOT, ZERO = 32, 45, 46, 48


_POWERS = [np.uint64(10 ** k) for k in range(1, 20)]


def _digit_count(mag):
    """Number of decimal digits of each uint64 (at least 1)."""
    count = np.ones(mag.shape, dtype=np.int64)
    for power in _POWERS:
        more = mag >= power
        if not more.any():
            break
        count += more
    return count


def _place_digits(out, mag, last_col, n_digits, min_digits):
    """Write the decimal digits of ``mag`` ending at column ``last_col`` (inclusive)."""
    rest = mag.copy()
    ten = np.uint64(10)
    for k in range(int(n_digits.max(initial=min_digits))):
        digit = (rest % ten).astype(np.uint8) + ZERO
        col = last_col - k
        out[:, col] = np.where(k < n_digits, digit, out[:, col])
        rest //= ten


def int_matrix(values):
    """Format integers like ``str(int)``, right-aligned."""
    values = np.asarray(values, dtype=np.int64)
    neg = values < 0
    # np.negative wraps INT64_MIN onto itself; viewed as uint64 it is still the magnitude.
    mag = np.where(neg, np.negative(values), values).view(np.uint64)
    count = _digit_count(mag)
    width = int((count + neg).max(initial=1))
    out = np.full((len(values), width), SPACE, dtype=np.uint8)
    _place_digits(out, mag, width - 1, count, 1)
    rows = np.flatnonzero(neg)
    out[rows, width - 1 - count[rows]] = MINUS
    return out


def float_matrix(values, decimals, special_format=None, special=None):
    """Format floats like ``'%.{decimals}f'``, right-aligned.

    Parameters
    ----------
    values : numpy.ndarray of float
    decimals : int
    special_format : str, optional
        printf format for the rows flagged in ``special`` (e.g. ``'%.6e'``).
    special : numpy.ndarray of bool, optional
        Rows written with ``special_format``. Non-finite values are always
        written as ``nan``, ``inf``, ``-inf``.
    """
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    other = ~finite if special is None else (~finite | special)
    scaled = np.rint(np.abs(np.where(other, 0.0, values)) * 10.0 ** decimals)
    if scaled.size and scaled.max() >= 2.0 ** 62:
        # Too large for integer digits: the caller's '%' format handles these.
        other = other | (scaled >= 2.0 ** 62)
        scaled = np.where(other, 0.0, scaled)
    mag = scaled.astype(np.uint64)
    neg = (values < 0) & ~other
    n_digits = np.maximum(_digit_count(mag), decimals + 1)
    width = int((n_digits + neg).max(initial=decimals + 1)) + (1 if decimals else 0)
    out = np.full((len(values), width), SPACE, dtype=np.uint8)
    last = width - 1
    if decimals:
        # fraction digits end at the last column, the integer part ends before the dot
        frac = mag % np.uint64(10 ** decimals)
        _place_digits(out, frac, last, np.full(len(values), decimals), decimals)
        out[:, last - decimals] = DOT
        whole = mag // np.uint64(10 ** decimals)
        n_whole = _digit_count(whole)
        _place_digits(out, whole, last - decimals - 1, n_whole, 1)
        sign_col = last - decimals - 1 - n_whole
    else:
        n_whole = _digit_count(mag)
        _place_digits(out, mag, last, n_whole, 1)
        sign_col = last - n_whole
    rows = np.flatnonzero(neg)
    out[rows, sign_col[rows]] = MINUS
    rows = np.flatnonzero(other)
    if len(rows):
        fmt = special_format or f'%.{decimals}f'
        text = np.where(np.isfinite(values[rows]),
                        np.char.mod(fmt, values[rows]),
                        np.char.mod('%f', values[rows]))
        out = _put_right(out, rows, np.char.encode(text.astype(str), 'ascii'))
    return out


def _put_right(out, rows, texts):
    """Overwrite ``rows`` of ``out`` with byte strings, right-aligned, widening if needed."""
    width = max(out.shape[1], texts.dtype.itemsize)
    if width > out.shape[1]:
        pad = np.full((out.shape[0], width - out.shape[1]), SPACE, dtype=np.uint8)
        out = np.hstack([pad, out])
    block = text_matrix(np.char.rjust(texts, width))
    out[rows] = block
    return out


def text_matrix(texts):
    """Left-aligned matrix of byte strings (a numpy ``S`` array)."""
    texts = np.asarray(texts)
    width = max(texts.dtype.itemsize, 1)
    out = np.ascontiguousarray(texts, dtype=f'S{width}').view(np.uint8).reshape(len(texts), width)
    out = out.copy()
    out[out == 0] = SPACE
    return out


def join_rows(matrices, sep=b' '):
    """Join column matrices into newline-terminated rows of bytes."""
    n = matrices[0].shape[0]
    gap = np.full((n, len(sep)), np.frombuffer(sep, dtype=np.uint8), dtype=np.uint8)
    parts = []
    for i, m in enumerate(matrices):
        if i:
            parts.append(gap)
        parts.append(m)
    parts.append(np.full((n, 1), ord('\n'), dtype=np.uint8))
    return np.hstack(parts).tobytes()
