"""Read and write RELION STAR files (3.0, 3.1, 4 and 5 styles).

Blocks are named without the ``data_`` prefix (``'optics'``, ``'particles'``,
``''`` for RELION 3.0's bare ``data_``); columns and keys are named without the
leading underscore (``'rlnImageName'``), as the ``starfile`` package does.
Loop blocks are DataFrames, key-value blocks are dicts.
"""

import csv
import re
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd

from ._atomic import atomic_path
from ._fixedwidth import float_matrix, int_matrix, join_rows, text_matrix
from .errors import StarError

__all__ = [
    'StarDocument', 'ParticlesStar', 'read_star', 'write_star', 'read_particles_star',
    'write_particles_star', 'upgrade_to_relion31', 'merge_optics', 'parse_image_names',
    'format_image_names', 'is_string_label', 'OPTICS_LABELS',
]

#: Labels that RELION 3.1+ keeps in the optics table rather than per particle.
OPTICS_LABELS = (
    'rlnOpticsGroupName', 'rlnOpticsGroup', 'rlnMtfFileName', 'rlnMicrographOriginalPixelSize',
    'rlnVoltage', 'rlnSphericalAberration', 'rlnAmplitudeContrast', 'rlnImagePixelSize',
    'rlnImageSize', 'rlnImageDimensionality', 'rlnCtfDataAreCtfPremultiplied',
    'rlnBeamTiltX', 'rlnBeamTiltY', 'rlnOddZernike', 'rlnEvenZernike',
    'rlnMagMat00', 'rlnMagMat01', 'rlnMagMat10', 'rlnMagMat11', 'rlnMicrographPixelSize',
)

# What RELION 3.1+ needs in the optics table of particles.
_REQUIRED_OPTICS = ('rlnOpticsGroup', 'rlnVoltage', 'rlnSphericalAberration',
                    'rlnAmplitudeContrast', 'rlnImagePixelSize', 'rlnImageSize')

# RELION 3.0 per-particle labels that the optics table replaces.
_LEGACY_OPTICS_LABELS = ('rlnMagnification', 'rlnDetectorPixelSize', 'rlnPixelSize')

_STRING_SUFFIXES = ('Name', 'Image', 'Zernike')

# Both start with a literal so that the search skips through long loops at memchr speed;
# that the match starts its line is checked afterwards.
_VERSION_RE = re.compile(r'#[ \t]*version[ \t]+(\d+)[ \t]*(?:\n|$)')
_DATA_RE = re.compile(r'data_(\S*)')
_KEY_VALUE_RE = re.compile(r"_(\S+)\s+(\"[^\"]*\"(?!\S)|'(?:[^']|'(?=\S))*'(?!\S)|\S+)\s*(#.*)?$")
# A double-quoted string, a single-quoted one (may contain ' not followed by a space), a comment.
_LEXEME_RE = re.compile(r"""(?<!\S)(?:"[^"\n]*"(?!\S)|'(?:[^'\n]|'(?=\S))*'(?!\S)|#[^\n]*)""")
_TOKEN_RE = re.compile(r'(?<!\S)"(?:[^"\n]|"")*"(?!\S)|\S+')
_INT_RE = re.compile(r'[-+]?\d+$')
_CUT_NUMBER_RE = re.compile(r'[-+]?(\d+\.?\d*|\.\d+)?([eE][-+]?)?$')
_NEEDS_QUOTES = r'\s|^$|^[#_"\']|^data_|^loop_'
# The same test on all values joined by NUL: any of these substrings means some value needs quotes.
_QUOTE_MARKS = (' ', '\t', '\n', '\r', '\x0b', '\x0c', '\0\0', '\0#', '\0_', '\0"', "\0'",
                '\0data_', '\0loop_')


@dataclass
class StarDocument:
    """The data blocks of a STAR file, in file order.

    Attributes
    ----------
    blocks : dict
        Block name (no ``data_`` prefix) -> DataFrame (loop) or dict (key-value).
    version : str or None
        The number of the first ``# version NNN`` line, e.g. ``'30001'``.
    path : pathlib.Path
        The file read.
    """

    blocks: dict
    version: str = None
    path: Path = None


@dataclass
class ParticlesStar:
    """A particle table with its optics table (None for RELION 3.0 files)."""

    particles: pd.DataFrame
    optics: pd.DataFrame = None
    version: str = None
    path: Path = None


@dataclass
class _Block:
    name: str
    start: int      # offset of the 'data_' line
    body: int       # offset just after the 'data_' line
    end: int        # offset of the next 'data_' line or end of text


def is_string_label(label):
    """Whether a RELION label always holds text (file names, group names)."""
    return label.endswith(_STRING_SUFFIXES)


# ------------------------------------------------------------------ reading

def read_star(path, blocks=None):
    """Read a STAR file.

    Parameters
    ----------
    path : str or os.PathLike
    blocks : iterable of str, optional
        Names of the blocks to parse (others are skipped); all when None.

    Returns
    -------
    StarDocument

    Raises
    ------
    StarError
        If the file is missing, not text, has no data block, a requested block is
        absent, or a loop has rows with the wrong number of fields.
    """
    path = Path(path)
    text = _read_text(path)
    found = _find_blocks(path, text)
    wanted = None
    if blocks is not None:
        wanted = [b[5:] if b.startswith('data_') else b for b in blocks]
        missing = [b for b in wanted if b not in {blk.name for blk in found}]
        if missing:
            present = ', '.join(f'data_{b.name}' for b in found)
            raise StarError(path, f"no data_{missing[0]} block (blocks present: {present})")
    parsed = {}
    for block in found:
        if wanted is None or block.name in wanted:
            parsed[block.name] = _parse_block(path, text, block)
    version = next((m.group(1) for m in _VERSION_RE.finditer(text) if _starts_line(text, m)), None)
    return StarDocument(blocks=parsed, version=version, path=path)


def read_particles_star(path):
    """Read the particle table and the optics table of a STAR file.

    The particle table is the ``data_particles`` block, or for RELION 3.0 the
    bare ``data_`` / ``data_images`` block, or else the first loop block with an
    ``rlnImageName`` column.

    Returns
    -------
    ParticlesStar

    Raises
    ------
    StarError
        If the file cannot be read or has no loop block with ``rlnImageName``.
    """
    doc = read_star(path)
    loops = {name: b for name, b in doc.blocks.items()
             if isinstance(b, pd.DataFrame) and 'rlnImageName' in b.columns}
    name = next((n for n in ('particles', '', 'images') if n in loops), next(iter(loops), None))
    if name is None:
        raise StarError(doc.path, 'no particles table (no loop block with _rlnImageName)')
    optics = doc.blocks.get('optics')
    if not isinstance(optics, pd.DataFrame):
        optics = None
    return ParticlesStar(particles=loops[name], optics=optics, version=doc.version, path=doc.path)


def _read_text(path):
    try:
        return path.read_text(encoding='utf-8')
    except FileNotFoundError:
        raise StarError(path, 'file not found') from None
    except IsADirectoryError:
        raise StarError(path, 'is a folder, not a STAR file') from None
    except UnicodeDecodeError as exc:
        raise StarError(path, f'not a text STAR file (byte {exc.start} is not UTF-8)') from None


def _line_number(text, offset):
    return text.count('\n', 0, offset) + 1


def _starts_line(text, match):
    line_start = text.rfind('\n', 0, match.start()) + 1
    return not text[line_start:match.start()].strip(' \t')


def _find_blocks(path, text):
    starts = [m for m in _DATA_RE.finditer(text) if _starts_line(text, m)]
    if not starts:
        reason = 'empty file' if not text.strip() else 'no data_ block'
        raise StarError(path, f'{reason}: not a STAR file')
    blocks, seen = [], set()
    for i, m in enumerate(starts):
        name = m.group(1)
        if name in seen:
            line = _line_number(text, m.start())
            raise StarError(path, f'duplicate block data_{name} (line {line})')
        seen.add(name)
        nl = text.find('\n', m.end())
        body = len(text) if nl < 0 else nl + 1
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        blocks.append(_Block(name, m.start(), body, end))
    return blocks


def _significant_lines(text, start, end):
    """Yield (offset, stripped line) for non-blank, non-comment lines."""
    pos = start
    while pos < end:
        nl = text.find('\n', pos, end)
        nl = end if nl < 0 else nl
        line = text[pos:nl].strip()
        if line and not line.startswith('#'):
            yield pos, line
        pos = nl + 1


def _parse_block(path, text, block):
    lines = _significant_lines(text, block.body, block.end)
    first = next(lines, None)
    if first is None:
        return {}
    if first[1].startswith('loop_'):
        return _parse_loop(path, text, block, lines)
    return _parse_key_values(path, text, block, [first, *lines])


def _parse_key_values(path, text, block, lines):
    values = {}
    for offset, line in lines:
        where = f'data_{block.name}, line {_line_number(text, offset)}'
        if line.startswith('loop_'):
            raise StarError(path, f'{where}: a loop after key-value pairs in the same block')
        m = _KEY_VALUE_RE.match(line)
        if not line.startswith('_') or m is None:
            raise StarError(path, f'{where}: expected "_label value", found {line[:60]!r}')
        key, raw = m.group(1), m.group(2)
        if len(raw) > 1 and raw[0] in '"\'' and raw[-1] == raw[0]:
            values[key] = raw[1:-1]
        else:
            values[key] = raw if is_string_label(key) else _numericise(raw)
    return values


def _numericise(value):
    if _INT_RE.match(value):
        return int(value)
    if '_' not in value:
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _parse_loop(path, text, block, lines):
    columns, data_start = [], block.end
    for offset, line in lines:
        if not line.startswith('_'):
            data_start = offset
            break
        columns.append(line.split()[0][1:])
    where = f'data_{block.name}'
    if not columns:
        raise StarError(path, f'{where}: loop_ without column labels')
    dup = pd.Index(columns)[pd.Index(columns).duplicated()]
    if len(dup):
        raise StarError(path, f'{where}: column _{dup[0]} is declared twice')
    first_line = _line_number(text, data_start)
    chunk = text[data_start:block.end]
    if '#' in chunk or "'" in chunk:
        chunk = _LEXEME_RE.sub(_normalise_lexeme, chunk)
    first_row = next(_data_lines(chunk), (0, ''))[1]
    # Quoted values are text (STAR), as are file and group names even when they look numeric.
    text_cols = {i for i, token in enumerate(_TOKEN_RE.findall(first_row)) if token[0] == '"'}
    text_cols |= {i for i, c in enumerate(columns) if is_string_label(c)}
    try:
        df = pd.read_csv(StringIO(chunk), sep=r'\s+', header=None, index_col=False,
                         dtype={i: str for i in text_cols if i < len(columns)},
                         keep_default_na=False, na_values=[''], quotechar='"', engine='c')
    except pd.errors.EmptyDataError:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    except pd.errors.ParserError as exc:
        m = re.search(r'Expected (\d+) fields in line (\d+), saw (\d+)', str(exc))
        if m is None:
            raise StarError(path, f'{where}: cannot parse the loop ({exc})'.strip()) from None
        # pandas counts lines from the start of the chunk, blank lines included.
        line, n_fields = first_line + int(m.group(2)) - 1, int(m.group(3))
        if n_fields == len(columns):
            # The first row set pandas' expectation and is the wrong one.
            line, n_fields = first_line, int(m.group(1))
        raise StarError(path, f'{where}, line {line}: {n_fields} fields instead of '
                              f'{len(columns)}') from None
    if df.shape[1] != len(columns):
        raise StarError(path, f'{where} (line {first_line}): rows have {df.shape[1]} fields but '
                              f'the loop declares {len(columns)} columns')
    df.columns = columns
    _check_short_rows(path, where, df, chunk, first_line)
    # A file cut inside a number ("1.5e") ends without a newline: then a text column that is
    # numeric but for its last value is a truncated numeric column.
    cut = block.end == len(text) and not text.endswith('\n')
    for i, col in enumerate(columns):
        if i in text_cols:
            df[col] = df[col].fillna('')
        elif df[col].dtype == object:
            df[col] = _maybe_numeric(path, where, df[col], cut)
    return df


def _normalise_lexeme(match):
    """Drop a comment; turn 'single quoted' into "double quoted" (pandas knows one quote)."""
    lexeme = match.group(0)
    if lexeme[0] == '#':
        return ''
    if lexeme[0] == "'":
        return '"' + lexeme[1:-1].replace('"', '""') + '"'
    return lexeme


def _data_lines(chunk):
    """Yield (line index in chunk, stripped line) for the non-blank lines."""
    pos, index = 0, 0
    while pos < len(chunk):
        nl = chunk.find('\n', pos)
        nl = len(chunk) if nl < 0 else nl
        line = chunk[pos:nl].strip()
        if line:
            yield index, line
        pos, index = nl + 1, index + 1


def _check_short_rows(path, where, df, chunk, first_line):
    """Raise if a row has fewer fields than columns (pandas pads those with NaN)."""
    suspects = set(np.flatnonzero(df.iloc[:, -1].isna().to_numpy()).tolist())
    if not suspects:
        return
    # A quoted "" in the last column also reads as NaN: count the fields of those rows.
    last = max(suspects)
    for row, (index, line) in enumerate(_data_lines(chunk)):
        if row in suspects:
            n_fields = len(_TOKEN_RE.findall(line))
            if n_fields != df.shape[1]:
                raise StarError(path, f'{where}, line {first_line + index}: {n_fields} fields '
                                      f'instead of {df.shape[1]} (truncated or corrupt row)')
        if row == last:
            return


def _maybe_numeric(path, where, series, cut):
    """Convert a text column to numbers when every value is one."""
    numbers = pd.to_numeric(series, errors='coerce')
    bad = numbers.isna() & series.notna() & ~series.astype(str).str.lower().isin(['nan', '<na>'])
    n_bad = int(bad.sum())
    if n_bad == 0:
        return numbers
    last = series.iloc[-1]
    if cut and n_bad == 1 and bad.iloc[-1] and len(series) > 1 and _CUT_NUMBER_RE.match(last):
        raise StarError(path, f'{where}: last row has {last!r} in numeric column '
                              f'_{series.name} (truncated file?)')
    return series.fillna('')


# ------------------------------------------------------------------ writing

def write_star(path, blocks, version='30001', float_format='%.6f'):
    """Write data blocks to a STAR file, atomically.

    Parameters
    ----------
    path : str or os.PathLike
    blocks : dict
        Block name (without ``data_``) -> DataFrame (loop) or dict (key-value),
        written in this order.
    version : str or None
        Writes ``# version <version>`` before every block (RELION 3.1+ style).
    float_format : str
        printf format of floats. Like RELION, values with ``0 < |x| < 1e-3`` or
        ``|x| >= 1e5`` are written in exponent notation of the same precision
        when ``float_format`` is ``'%.Nf'``, so they keep their digits.

    Notes
    -----
    Text values containing spaces (or empty, or starting with ``#``, ``_`` or a
    quote) are written between double quotes (single if they contain one).
    """
    if not isinstance(blocks, dict):
        raise TypeError(f'{path}: blocks must be a dict name -> DataFrame or dict')
    sci_format = _sci_format(float_format)
    with atomic_path(path) as tmp, open(tmp, 'wb') as fh:
        for name, block in blocks.items():
            name = name[5:] if name.startswith('data_') else name
            if any(ch.isspace() for ch in name):
                raise ValueError(f'{path}: block name {name!r} contains whitespace')
            head = f'\n# version {version}\n\n' if version else '\n'
            fh.write(f'{head}data_{name}\n\n'.encode())
            if isinstance(block, pd.DataFrame):
                _write_loop(fh, path, name, block, float_format, sci_format)
            elif isinstance(block, dict):
                _write_key_values(fh, path, name, block, float_format, sci_format)
            else:
                raise TypeError(f'{path}: block data_{name} is a {type(block).__name__}, '
                                f'expected a DataFrame or a dict')
            fh.write(b'\n')


_ROWS_PER_CHUNK = 100_000


def _sci_format(float_format):
    m = re.fullmatch(r'%\.(\d+)f', float_format)
    return f'%.{m.group(1)}e' if m else None


def _write_loop(fh, path, name, df, float_format, sci_format):
    bad = [c for c in df.columns
           if not isinstance(c, str) or not c or any(ch.isspace() for ch in c)]
    if bad:
        raise ValueError(f'{path}: data_{name} has an invalid column name {bad[0]!r}')
    header = 'loop_\n' + ''.join(f'_{c} #{i}\n' for i, c in enumerate(df.columns, 1))
    fh.write(header.encode())
    if df.empty:
        return
    columns = [_column_for_output(path, name, df[c]) for c in df.columns]
    if sci_format is None:
        out = pd.DataFrame(dict(enumerate(columns)))
        fh.write(out.to_csv(sep='\t', header=False, index=False, float_format=float_format,
                            na_rep='nan', quoting=csv.QUOTE_NONE, lineterminator='\n').encode())
        return
    decimals = int(float_format[2:-1])
    for start in range(0, len(df), _ROWS_PER_CHUNK):
        rows = slice(start, start + _ROWS_PER_CHUNK)
        fh.write(join_rows([_column_matrix(c[rows], decimals, sci_format) for c in columns]))


def _column_for_output(path, name, series):
    """Numbers as a numpy array (int64 or float64), text as quoted ``str`` objects."""
    kind = series.dtype.kind
    if kind in 'biu' and not series.hasnans:
        return series.to_numpy(dtype=np.int64)
    if kind in 'fiu':
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    return _quote(path, name, series).to_numpy(dtype=object)


def _column_matrix(values, decimals, sci_format):
    if values.dtype.kind == 'i':
        return int_matrix(values)
    if values.dtype.kind == 'f':
        magnitude = np.abs(values)
        with np.errstate(invalid='ignore'):
            extreme = (magnitude != 0) & ((magnitude < 1e-3) | (magnitude >= 1e5))
        return float_matrix(values, decimals, sci_format, extreme)
    try:
        encoded = np.asarray(values, dtype='S')
    except UnicodeEncodeError:
        encoded = np.asarray(pd.Series(values).str.encode('utf-8').to_numpy(), dtype='S')
    return text_matrix(encoded)


def _quote(path, name, series):
    text = series.where(series.notna(), '').astype(str)
    joined = '\0' + '\0'.join(text) + '\0'
    if not any(mark in joined for mark in _QUOTE_MARKS):
        return text
    needs = text.str.contains(_NEEDS_QUOTES, regex=True)
    if not needs.any():
        return text
    unwritable = text.str.contains(r'[\t\n\r]', regex=True)
    if unwritable.any():
        raise ValueError(f'{path}: data_{name} column _{series.name}: value '
                         f'{text[unwritable].iloc[0]!r} contains a tab or a line break')
    has_double = text.str.contains('"', regex=False)
    both = needs & has_double & text.str.contains("'", regex=False)
    if both.any():
        raise ValueError(f'{path}: data_{name} column _{series.name}: value '
                         f'{text[both].iloc[0]!r} contains both quote characters')
    quoted = text.where(~needs, '"' + text + '"')
    return quoted.where(~(needs & has_double), "'" + text + "'")


def _write_key_values(fh, path, name, values, float_format, sci_format):
    if not values:
        return
    width = max(len(k) for k in values) + 4
    lines = []
    for key, value in values.items():
        if isinstance(value, (bool, np.bool_)):
            text = str(int(value))
        elif isinstance(value, (int, np.integer)):
            text = str(value)
        elif isinstance(value, (float, np.floating)):
            extreme = sci_format and np.isfinite(value) and value != 0 and (
                abs(value) < 1e-3 or abs(value) >= 1e5)
            text = (sci_format if extreme else float_format) % value
        else:
            text = _quote(path, name, pd.Series([value], name=key)).iloc[0]
        lines.append(f'_{key:<{width}} {text}\n')
    fh.write(''.join(lines).encode())


# ------------------------------------------------------------------ particles and optics

def write_particles_star(path, particles, optics=None, version='30001', image_size=None):
    """Write a RELION 3.1+ particle file: ``data_optics`` then ``data_particles``.

    Parameters
    ----------
    path : str or os.PathLike
    particles : pandas.DataFrame
        Particle rows. With ``optics=None`` the optics table is derived from
        per-particle columns (see :func:`upgrade_to_relion31`).
    optics : pandas.DataFrame, optional
        The optics table, written as given (``rlnOpticsGroupName`` and
        ``rlnImageDimensionality`` = 2 are added when absent); it must have the
        group number, voltage, Cs, amplitude contrast, pixel size and box size.
    version : str or None
    image_size : int, optional
        Box size for RELION 3.0 input that has no ``rlnImageSize`` column.

    Raises
    ------
    StarError
        If the optics cannot be derived, lack what RELION needs, or particles
        refer to absent optics groups.
    """
    try:
        if optics is None:
            particles, optics = upgrade_to_relion31(particles, image_size=image_size)
        else:
            particles, optics = _check_optics(particles, optics)
            missing = [c for c in _REQUIRED_OPTICS if c not in optics.columns]
            if missing:
                raise ValueError(f'the optics table lacks {", ".join(missing)} (RELION needs them)')
            if 'rlnImageDimensionality' not in optics.columns:
                optics['rlnImageDimensionality'] = 2
    except ValueError as exc:
        raise StarError(path, str(exc)) from None
    write_star(path, {'optics': optics, 'particles': particles}, version=version)


def _check_optics(particles, optics):
    if 'rlnOpticsGroup' not in optics.columns:
        raise ValueError('the optics table has no rlnOpticsGroup column')
    optics = optics.copy()
    if 'rlnOpticsGroupName' not in optics.columns:
        names = [f'opticsGroup{g}' for g in optics['rlnOpticsGroup']]
        optics.insert(0, 'rlnOpticsGroupName', names)
    if 'rlnOpticsGroup' not in particles.columns:
        if len(optics) != 1:
            raise ValueError(f'particles have no rlnOpticsGroup column and there are '
                             f'{len(optics)} optics groups')
        particles = particles.assign(rlnOpticsGroup=int(optics['rlnOpticsGroup'].iloc[0]))
    unknown = set(pd.unique(particles['rlnOpticsGroup'])) - set(optics['rlnOpticsGroup'])
    if unknown:
        raise ValueError(f'particles refer to optics groups {sorted(unknown)} absent from the '
                         f'optics table')
    return particles, optics


def upgrade_to_relion31(particles, image_size=None):
    """Split per-particle optics columns (RELION 3.0 style) into an optics table.

    Particles are grouped by voltage, spherical aberration, amplitude contrast,
    pixel size, box size and any other optics label present. Pixel size comes
    from ``rlnImagePixelSize``, else ``rlnPixelSize``, else
    ``rlnDetectorPixelSize * 1e4 / rlnMagnification``. Existing
    ``rlnOpticsGroup`` numbers (and names) are kept when they are consistent
    with the optics values; otherwise groups are numbered 1, 2, ... in order of
    first appearance. ``rlnOriginX/Y/Z`` (pixels) become ``rlnOriginX/Y/ZAngst``.

    Parameters
    ----------
    particles : pandas.DataFrame
    image_size : int, optional
        Box size, needed when there is no ``rlnImageSize`` column.

    Returns
    -------
    particles : pandas.DataFrame
        Without the optics columns, with ``rlnOpticsGroup``.
    optics : pandas.DataFrame

    Raises
    ------
    ValueError
        If a required optics value is missing.
    """
    p = particles.copy()
    required = ('rlnVoltage', 'rlnSphericalAberration', 'rlnAmplitudeContrast')
    missing = [c for c in required if c not in p.columns]
    if missing:
        raise ValueError(f'cannot build the optics table: no column {", ".join(missing)}')
    if 'rlnImagePixelSize' not in p.columns:
        if 'rlnPixelSize' in p.columns:
            p['rlnImagePixelSize'] = p['rlnPixelSize'].astype(float)
        elif {'rlnDetectorPixelSize', 'rlnMagnification'} <= set(p.columns):
            p['rlnImagePixelSize'] = (p['rlnDetectorPixelSize'].astype(float) * 1e4
                                      / p['rlnMagnification'].astype(float))
        else:
            raise ValueError('cannot build the optics table: no pixel size (rlnImagePixelSize, '
                             'rlnPixelSize or rlnDetectorPixelSize + rlnMagnification)')
    if 'rlnImageSize' not in p.columns:
        if image_size is None:
            raise ValueError('cannot build the optics table: no rlnImageSize column; give the '
                             'box size (image_size)')
        p['rlnImageSize'] = int(image_size)
    if 'rlnImageDimensionality' not in p.columns:
        p['rlnImageDimensionality'] = 2
    p = _origins_to_angstrom(p)

    values = [c for c in OPTICS_LABELS if c in p.columns and c not in ('rlnOpticsGroup',
                                                                       'rlnOpticsGroupName')]
    has_numbers = 'rlnOpticsGroup' in p.columns
    keys = values + ['rlnOpticsGroup'] if has_numbers else values
    groups = p.groupby(keys, sort=False, dropna=False).ngroup().to_numpy() + 1
    # ngroup numbers groups in order of first appearance, so these are in group order.
    rows = p.iloc[np.unique(groups, return_index=True)[1]]
    consistent = has_numbers and (
        pd.Series(groups).groupby(p['rlnOpticsGroup'].to_numpy()).nunique().max() == 1)
    if consistent:
        numbers = rows['rlnOpticsGroup'].to_numpy()
        names = (rows['rlnOpticsGroupName'].to_numpy() if 'rlnOpticsGroupName' in p.columns
                 else np.array([f'opticsGroup{g}' for g in numbers], dtype=object))
    else:
        numbers = np.arange(1, len(rows) + 1, dtype=np.int64)
        names = np.array([f'opticsGroup{g}' for g in numbers], dtype=object)
        p['rlnOpticsGroup'] = groups
    optics = pd.DataFrame({'rlnOpticsGroupName': names, 'rlnOpticsGroup': numbers})
    for col in values:
        optics[col] = rows[col].to_numpy()
    optics['rlnImageSize'] = optics['rlnImageSize'].astype(np.int64)
    optics['rlnImageDimensionality'] = optics['rlnImageDimensionality'].astype(np.int64)
    optics = optics.sort_values('rlnOpticsGroup', kind='stable', ignore_index=True)
    drop = [c for c in (*OPTICS_LABELS, *_LEGACY_OPTICS_LABELS)
            if c in p.columns and c != 'rlnOpticsGroup']
    return p.drop(columns=drop), optics


def _origins_to_angstrom(p):
    """Replace pixel origins (RELION 3.0) by origins in Angstrom, in place of the old columns."""
    renames = {}
    for axis in 'XYZ':
        old, new = f'rlnOrigin{axis}', f'rlnOrigin{axis}Angst'
        if old in p.columns:
            if new not in p.columns:
                p[old] = p[old].astype(float) * p['rlnImagePixelSize']
                renames[old] = new
            else:
                p = p.drop(columns=old)
    return p.rename(columns=renames)


def merge_optics(particles, optics):
    """Return the particles with the columns of their optics group added.

    Parameters
    ----------
    particles : pandas.DataFrame
        With ``rlnOpticsGroup`` (may be absent when there is one optics group).
    optics : pandas.DataFrame or None
        None returns a copy of ``particles``.

    Returns
    -------
    pandas.DataFrame
        Same rows, order and index as ``particles``; optics columns that the
        particles already have are not overwritten.

    Raises
    ------
    ValueError
        If a particle refers to an optics group absent from ``optics``.
    """
    if optics is None:
        return particles.copy()
    particles, optics = _check_optics(particles, optics)
    where = pd.Index(optics['rlnOpticsGroup']).get_indexer(particles['rlnOpticsGroup'])
    merged = particles.copy()
    for col in optics.columns:
        if col not in merged.columns:
            merged[col] = optics[col].to_numpy()[where]
    return merged


# ------------------------------------------------------------------ image names

def parse_image_names(series):
    """Split RELION image names ``'000012@Extract/job007/x.mrcs'`` into index and path.

    Parameters
    ----------
    series : pandas.Series or array-like of str
        A name without ``@`` is image 1 of a single-image or stack file.

    Returns
    -------
    indices : numpy.ndarray of int64
        1-based image indices.
    paths : numpy.ndarray of object
        File paths, as written.

    Raises
    ------
    ValueError
        If an index before ``@`` is not a positive integer.
    """
    text = pd.Series(np.asarray(series, dtype=object)).astype(str)
    parts = text.str.partition('@')
    has_at = (parts[1] == '@').to_numpy()
    paths = np.where(has_at, parts[2].to_numpy(), parts[0].to_numpy()).astype(object)
    indices = np.ones(len(text), dtype=np.int64)
    if has_at.any():
        raw = parts[0][has_at]
        numbers = pd.to_numeric(raw.where(raw.str.fullmatch(r'\s*\d+\s*'), None), errors='coerce')
        bad = numbers.isna() | (numbers < 1)
        if bad.any():
            raise ValueError(f'image name {text[has_at][bad].iloc[0]!r} does not start with a '
                             f'positive image number before "@"')
        indices[has_at] = numbers.to_numpy(dtype=np.int64)
    return indices, paths


def format_image_names(indices, paths):
    """Build RELION image names ``'000012@path'`` (6-digit zero-padded indices).

    Parameters
    ----------
    indices : array-like of int
        1-based indices.
    paths : array-like of str, or str
        One path per index, or one path for all.

    Returns
    -------
    numpy.ndarray of object (str)
    """
    indices = np.asarray(indices)
    if indices.size and (indices.dtype.kind not in 'iuf' or np.any(np.mod(indices, 1) != 0)
                         or indices.min() < 1):
        raise ValueError('image indices must be positive integers')
    numbers = pd.Series(indices.astype(np.int64).ravel()).astype(str).str.zfill(6)
    paths = np.broadcast_to(np.asarray(paths, dtype=object), numbers.shape)
    return (numbers + '@' + pd.Series(paths, dtype=object).astype(str)).to_numpy(dtype=object)
