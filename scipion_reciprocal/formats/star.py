"""Read and write RELION STAR files (3.0, 3.1, 4 and 5 styles) with the ``starfile`` package.

Blocks are named without the ``data_`` prefix (``'optics'``, ``'particles'``,
``''`` for RELION 3.0's bare ``data_``); columns and keys are named without the
leading underscore (``'rlnImageName'``), as ``starfile`` does. Loop blocks are
DataFrames, key-value blocks are dicts.

``starfile`` parses and formats the blocks. This module adds what it leaves out:
the ``# version`` line, atomic writes, file and group names kept as text,
RELION's exponent notation for tiny and huge numbers, quoting of any text, and
errors that name the file, the block and the line.
"""

import linecache
import os
import re
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from ._atomic import atomic_path
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
# '_label value  # comment': the value "double quoted", 'single quoted' (as in STAR, a quote
# followed by a non-blank does not close it) or bare.
_KEY_VALUE_RE = re.compile(r"""_(\S+)\s+("[^"]*"(?!\S)|'(?:[^']|'(?=\S))*'(?!\S)|\S+)\s*(#.*)?$""")
# One value of a loop row (a quoted string, a bare word) or a comment to the end of the line.
_FIELD_RE = re.compile(r"""(?<!\S)(?:"[^"\n]*"|'(?:[^'\n]|'(?=\S))*')(?!\S)|(?<!\S)#.*|\S+""")
# A quoted loop value, or a quote character inside a bare value (see _starfile_copy).
_QUOTED_RE = re.compile(r"""(?<!\S)(?:"([^"\n]*)"|'((?:[^'\n]|'(?=\S))*)')(?!\S)|'""")
_CUT_NUMBER_RE = re.compile(r'[-+]?(\d+\.?\d*|\.\d+)?([eE][-+]?)?$')
_NEEDS_QUOTES = re.compile(r'\s|^$|#|^[_"\']|^data_|^loop_')
_FIXED_RE = re.compile(r'%\.(\d+)f')
# The same test on all values joined by NUL: any of these substrings means some value needs quotes.
_QUOTE_MARKS = (' ', '\t', '\n', '\r', '\x0b', '\x0c', '#', '\0\0', '\0_', '\0"', "\0'",
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
    """Where a block lies in the text and what its header declares."""

    name: str
    start: int                  # offset of the data_ line
    end: int                    # offset of the next data_ line, or the end of the text
    kind: str = 'empty'         # 'loop', 'pairs' (key-value) or 'empty'
    labels: list = field(default_factory=list)
    rows: int = None            # loop: offset of the first line after the labels
    fixes: list = field(default_factory=list)   # (start, end, text) for starfile's copy
    requoted: bool = False      # loop values re-quoted in starfile's copy


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
        Names of the blocks to return (blocks after the last of them are not
        parsed); all when None.

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
    outline = _outline(path, text)
    chosen = outline
    if blocks is not None:
        wanted = {b[5:] if b.startswith('data_') else b for b in blocks}
        missing = sorted(wanted - {b.name for b in outline})
        if missing:
            present = ', '.join(f'data_{b.name}' for b in outline)
            raise StarError(path, f"no data_{missing[0]} block (blocks present: {present})")
        chosen = [b for b in outline if b.name in wanted]
    parsed = outline[:outline.index(chosen[-1]) + 1] if chosen else []
    contents = _read_with_starfile(path, text, [b for b in parsed if b.kind != 'empty'])
    result = {}
    for block in chosen:
        content = contents.get(block.name, {})
        if block.kind == 'loop':
            _check_loop(path, text, block, content)
            _restore_na_texts(text, block, content)
        result[block.name] = content
    version = next((m.group(1) for m in _VERSION_RE.finditer(text) if _starts_line(text, m)), None)
    return StarDocument(blocks=result, version=version, path=path)


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


def _lines(text, start, end):
    """Yield (offset, line without its line end) for the lines between two offsets."""
    while start < end:
        nl = text.find('\n', start, end)
        nl = end if nl < 0 else nl
        yield start, text[start:nl]
        start = nl + 1


# ---------------------------------------- the outline: blocks and headers, checked

def _outline(path, text):
    """The blocks of the text with their headers, in file order."""
    starts = [m for m in _DATA_RE.finditer(text) if _starts_line(text, m)]
    if not starts:
        reason = 'empty file' if not text.strip() else 'no data_ block'
        raise StarError(path, f'{reason}: not a STAR file')
    line_starts = [text.rfind('\n', 0, m.start()) + 1 for m in starts] + [len(text)]
    blocks, seen = [], set()
    for i, m in enumerate(starts):
        name = m.group(1)
        if name in seen:
            raise StarError(path, f'duplicate block data_{name} '
                                  f'(line {_line_number(text, m.start())})')
        seen.add(name)
        block = _Block(name, line_starts[i], line_starts[i + 1])
        _read_header(path, text, block)
        blocks.append(block)
    return blocks


def _read_header(path, text, block):
    """Fill in the kind, labels and first row of a block; check key-value lines."""
    body = text.find('\n', block.start, block.end)
    body = block.end if body < 0 else body + 1
    in_loop = False
    for offset, raw in _lines(text, body, block.end):
        line = raw.strip()
        if in_loop:
            # Like starfile, the labels are the '_' lines right after loop_.
            if line.startswith('_'):
                block.labels.append(line.split()[0][1:])
                continue
            block.rows = offset
            break
        if not line or line.startswith('#'):
            continue
        if line.startswith('loop_'):
            if block.labels:
                raise StarError(path, f'data_{block.name}, line {_line_number(text, offset)}: '
                                      f'a loop after key-value pairs in the same block')
            block.kind, in_loop = 'loop', True
            continue
        m = _KEY_VALUE_RE.match(line)
        if not line.startswith('_') or m is None:
            raise StarError(path, f'data_{block.name}, line {_line_number(text, offset)}: '
                                  f'expected "_label value", found {line[:60]!r}')
        block.kind = 'pairs'
        block.labels.append(m.group(1))
        _check_pair_for_starfile(block, offset, raw, line, m)
    if in_loop:
        block.rows = block.end if block.rows is None else block.rows
        if not block.labels:
            raise StarError(path, f'data_{block.name}: loop_ is not followed by column labels')
        dup = pd.Index(block.labels)[pd.Index(block.labels).duplicated()]
        if len(dup):
            raise StarError(path, f'data_{block.name}: column _{dup[0]} is declared twice')


def _check_pair_for_starfile(block, offset, raw, line, match):
    """Note a key-value line that starfile would misread, with the line it reads right.

    starfile splits '_label value' lines with shlex, which refuses a comment after
    the value (``_rlnTitle 'a title'  # note``: "too many values to unpack") and a bare
    value with a quote or a backslash (``_rlnNote it's``: "No closing quotation";
    ``a\\b`` reads as ``ab``). Such lines are given to starfile re-quoted for shlex.
    """
    if not any(ch in line for ch in '#"\'\\'):
        return
    key, raw_value = match.group(1), match.group(2)
    value = raw_value
    if len(raw_value) > 1 and raw_value[0] in '"\'' and raw_value[-1] == raw_value[0]:
        value = raw_value[1:-1]
    try:
        if shlex.split(line) == [f'_{key}', value]:
            return
    except ValueError:
        pass
    block.fixes.append((offset, offset + len(raw), f'_{key} {shlex.quote(value)}'))


# ---------------------------------------- parsing with starfile

def _read_with_starfile(path, text, blocks):
    """Block name -> content of the (non-empty) blocks given, parsed by starfile."""
    if not blocks:
        return {}
    as_text = sorted({label for b in blocks for label in b.labels if is_string_label(label)})
    copy, apostrophe = _starfile_copy(text, blocks)
    source = path
    try:
        if copy is not None:
            with tempfile.NamedTemporaryFile('w', suffix='.star', delete=False,
                                             encoding='utf-8') as fh:
                fh.write(copy)
            source = fh.name
        # starfile reads lines through linecache, which does not look at the file again
        # while it holds lines of it (left there by a read that failed, say).
        linecache.checkcache(str(Path(source)))
        # read_n_blocks stops starfile after the last block wanted; it also keeps it from
        # failing on an empty block at the end of the file (it returns no block there).
        parsed = starfile.read(source, read_n_blocks=len(blocks), always_dict=True,
                               parse_as_string=as_text)
    except (ValueError, TypeError, IndexError) as exc:  # pandas' ParserError is a ValueError
        # starfile clears the line cache only when it succeeds: a stale copy would be read
        # again after the file is rewritten.
        linecache.clearcache()
        for block in blocks:
            if block.kind == 'loop':
                _check_fields(path, text, block)
        reason = f'{type(exc).__name__}: {str(exc).strip()}'
        raise StarError(path, f'cannot be read ({reason})') from None
    finally:
        if source is not path:
            os.unlink(source)
    # starfile files an empty block under its own name with the content of the next block
    # and never returns that next block: its contents are right and in order, its names
    # are not; the outline's names are.
    contents = list(parsed.values())
    kinds = ['loop' if isinstance(c, pd.DataFrame) else 'pairs' for c in contents]
    if kinds != [b.kind for b in blocks]:
        raise StarError(path, f'starfile found blocks {kinds} where the file has '
                              f'{[b.kind for b in blocks]}')
    for block, content in zip(blocks, contents):
        if block.requoted:
            for col in content.columns[content.dtypes == object]:
                content[col] = content[col].str.replace(apostrophe, "'", regex=False)
    return {b.name: c for b, c in zip(blocks, contents)}


def _starfile_copy(text, blocks):
    """The text as starfile must see it to read it right, or None if it can read the file.

    starfile turns every ' of a loop into " before pandas splits the rows, so that a
    row ``1 'say "hi" now' it's`` reads as ``1``, a broken ``"say "hi" now"`` and
    ``it"s``. In loops with a ', quoted values are given to starfile as pandas reads
    them (``"say ""hi"" now"``) and every ' inside a value as a character absent from
    the file, turned back into ' after. starfile also fails on a loop without rows
    followed by a comment, such as the ``# version`` line of the next block ("No
    columns to parse from file"): those comments are blanked. Key-value lines are
    fixed as :func:`_check_pair_for_starfile` says. Line numbers are unchanged.

    Returns
    -------
    (str or None, str or None)
        The text for starfile, and the character that stands for '.
    """
    fixes = [fix for b in blocks for fix in b.fixes]
    apostrophe = None

    def requote(m):
        if m.group(0) == "'":
            return apostrophe
        value = m.group(1) if m.group(1) is not None else m.group(2)
        return '"' + value.replace('"', '""').replace("'", apostrophe) + '"'

    for block in (b for b in blocks if b.kind == 'loop'):
        if next(_data_lines(text, block), None) is None:
            rows = text[block.rows:block.end]
            if rows.strip():
                fixes.append((block.rows, block.end, re.sub(r'[^\n]', '', rows)))
        elif text.find("'", block.rows, block.end) >= 0:
            if apostrophe is None:
                apostrophe = next(c for c in map(chr, range(0xE000, 0xF900)) if c not in text)
            block.requoted = True
            fixes.append((block.rows, block.end,
                          _QUOTED_RE.sub(requote, text[block.rows:block.end])))
    if not fixes:
        return None, None
    pieces, pos = [], 0
    for start, end, new in sorted(fixes):
        pieces += [text[pos:start], new]
        pos = end
    pieces.append(text[pos:])
    return ''.join(pieces), apostrophe


# ---------------------------------------- checks of what starfile returned

def _check_loop(path, text, block, df):
    """Raise StarError for rows starfile read without complaint but wrongly.

    A row with too few fields comes back padded with NaN (so the last column is NaN);
    a quote left open joins lines into one row (so there are fewer rows than lines);
    a file cut inside a number leaves text (``4.5e``) in a numeric column.
    """
    if len(df) and len(df.columns):
        suspects = np.flatnonzero(df.iloc[:, -1].isna().to_numpy())
        if len(suspects):
            _check_fields(path, text, block, rows=set(suspects.tolist()))
    if text.find('"', block.rows, block.end) >= 0 or block.requoted:
        n_lines = sum(1 for _ in _data_lines(text, block))
        if n_lines != len(df):
            _check_fields(path, text, block)
            raise StarError(path, f'data_{block.name}: {len(df)} rows read from {n_lines} lines '
                                  f'(a quote not closed?)')
    if block.end == len(text) and not text.endswith('\n') and len(df) > 1:
        for col in df.columns[df.dtypes == object]:
            last, head = df[col].iloc[-1], df[col].iloc[:-1]
            if (isinstance(last, str) and not is_string_label(col) and _CUT_NUMBER_RE.match(last)
                    and not (pd.to_numeric(head, errors='coerce').isna() & head.notna()).any()):
                raise StarError(path, f'data_{block.name}: last row has {last!r} in numeric '
                                      f'column _{col} (truncated file?)')


def _restore_na_texts(text, block, df):
    """Put back text values that pandas, under starfile, turned into NaN.

    starfile has pandas read ``nan``, ``NaN`` and ``<NA>`` as missing, quoted or not,
    so a text column with the value ``nan`` comes back with NaN there. In a text
    column NaN can only come from such a value: it is taken again from the row.
    """
    positions = [i for i, col in enumerate(df.columns) if df[col].dtype == object]
    missing = {}
    for i in positions:
        for row in np.flatnonzero(df.iloc[:, i].isna().to_numpy()).tolist():
            missing.setdefault(row, []).append(i)
    if not missing:
        return
    last = max(missing)
    for row, (_, line) in enumerate(_data_lines(text, block)):
        if row in missing:
            tokens = [t for t in _FIELD_RE.findall(line) if t[0] != '#']
            for i in missing[row]:
                token = tokens[i]
                quoted = len(token) > 1 and token[0] in '"\'' and token[-1] == token[0]
                df.iat[row, i] = token[1:-1] if quoted else token
        if row == last:
            return


def _data_lines(text, block):
    """Yield (line number, line) for the rows of a loop: lines not blank nor comments."""
    number = _line_number(text, block.rows)
    for _, raw in _lines(text, block.rows, block.end):
        line = raw.strip()
        if line and not line.startswith('#'):
            yield number, line
        number += 1


def _check_fields(path, text, block, rows=None):
    """Raise StarError at the first row (of ``rows``, indices; all when None) whose
    number of fields is not the number of columns."""
    ncols, first, bad, counts = len(block.labels), None, None, set()
    last = max(rows) if rows else None
    for index, (number, line) in enumerate(_data_lines(text, block)):
        if rows is not None:
            if index > last:
                break
            if index not in rows:
                continue
        n_fields = sum(1 for token in _FIELD_RE.findall(line) if token[0] != '#')
        first = number if first is None else first
        counts.add(n_fields)
        if n_fields != ncols and bad is None:
            bad = number, n_fields
            if rows is not None:
                break
    if bad is None:
        return
    where = f'data_{block.name}'
    if rows is None and len(counts) == 1:
        raise StarError(path, f'{where} (line {first}): rows have {bad[1]} fields but the loop '
                              f'declares {ncols} columns')
    tail = ' (truncated or corrupt row)' if bad[1] < ncols else ''
    raise StarError(path, f'{where}, line {bad[0]}: {bad[1]} fields instead of {ncols}{tail}')


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
    Values are separated by tabs. Text values containing spaces or ``#`` (or
    empty, or starting with ``_``, a quote, ``data_`` or ``loop_``) are written
    between double quotes (single if they contain one).
    """
    if not isinstance(blocks, dict):
        raise TypeError(f'{path}: blocks must be a dict name -> DataFrame or dict')
    parts = []
    for name, block in blocks.items():
        name = name[5:] if name.startswith('data_') else name
        if any(ch.isspace() for ch in name):
            raise ValueError(f'{path}: block name {name!r} contains whitespace')
        if isinstance(block, pd.DataFrame):
            block = _loop_as_text(path, name, block, float_format)
        elif isinstance(block, dict):
            block = _pairs_as_text(path, name, block, float_format)
        else:
            raise TypeError(f'{path}: block data_{name} is a {type(block).__name__}, '
                            f'expected a DataFrame or a dict')
        # Values come quoted already: quote_character='' keeps starfile from quoting them
        # again (it quotes only values with a space, not those with '#' or a leading '_').
        written = starfile.to_string({name: block}, float_format=float_format, sep='\t',
                                     na_rep='nan', quote_character='')
        parts.append(f'\n# version {version}\n\n' if version else '\n')
        # From the data_ line on: starfile's first line says when it was written, which
        # would make two runs of the simulator write different files.
        parts.append(written[written.index('\ndata_') + 1:])
    with atomic_path(path) as tmp, open(tmp, 'w', encoding='utf-8', newline='\n') as fh:
        fh.write(''.join(parts))


def _loop_as_text(path, name, df, float_format):
    """The loop with text quoted and floats formatted; integers stay integers."""
    bad = [c for c in df.columns
           if not isinstance(c, str) or not c or any(ch.isspace() for ch in c)]
    if bad:
        raise ValueError(f'{path}: data_{name} has an invalid column name {bad[0]!r}')
    if df.columns.has_duplicates:
        raise ValueError(f'{path}: data_{name} has the column '
                         f'{df.columns[df.columns.duplicated()][0]!r} twice')
    columns = {}
    for col in df.columns:
        series = df[col]
        kind = series.dtype.kind
        if kind == 'b' or (kind in 'iu' and not series.hasnans):
            columns[col] = series.to_numpy(dtype=np.int64)
        elif kind in 'fiu':
            columns[col] = _format_floats(series.to_numpy(dtype=np.float64, na_value=np.nan),
                                          float_format)
        else:
            values = series.to_numpy(dtype=object)
            texts = ['' if missing else str(v)
                     for v, missing in zip(values.tolist(), pd.isna(values).tolist())]
            joined = '\0' + '\0'.join(texts) + '\0'
            if any(mark in joined for mark in _QUOTE_MARKS):
                texts = [_quote(path, name, col, t) for t in texts]
            columns[col] = texts
    return pd.DataFrame(columns, columns=df.columns)


def _pairs_as_text(path, name, values, float_format):
    out = {}
    for key, value in values.items():
        if isinstance(value, (bool, np.bool_, int, np.integer)):
            out[key] = str(int(value))
        elif isinstance(value, (float, np.floating)):
            out[key] = _format_floats(np.array([value], dtype=np.float64), float_format)[0]
        else:
            out[key] = _quote(path, name, key, '' if pd.isna(value) else str(value))
    return out


def _format_floats(values, float_format):
    """Floats as text; with ``'%.Nf'``, tiny and huge values in ``'%.Ne'`` like RELION."""
    m = _FIXED_RE.fullmatch(float_format)
    if m is not None:
        magnitude = np.abs(values)
        with np.errstate(invalid='ignore'):
            extreme = (magnitude != 0) & ((magnitude < 1e-3) | (magnitude >= 1e5))
        extreme &= magnitude < np.inf
        if extreme.any():
            formats = np.where(extreme, f'%.{m.group(1)}e', float_format).tolist()
            return [f % v for f, v in zip(formats, values.tolist())]
    return [float_format % v for v in values.tolist()]


def _quote(path, name, label, text):
    """A text value, quoted where STAR needs it."""
    if not _NEEDS_QUOTES.search(text):
        return text
    if any(ch in text for ch in '\t\n\r'):
        raise ValueError(f'{path}: data_{name} column _{label}: value {text!r} contains a tab '
                         f'or a line break')
    if '"' not in text:
        return f'"{text}"'
    if "'" in text:
        raise ValueError(f'{path}: data_{name} column _{label}: value {text!r} contains both '
                         f'quote characters')
    return f"'{text}'"


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
