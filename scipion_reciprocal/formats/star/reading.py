"""Read whole STAR files with ``starfile``; the layout of blocks, which both readers use.

What starfile misses on files RELION writes is handled in :func:`_read_with_starfile` and
:func:`_check_loop`: the ``# version`` line; names that look like numbers; a loop without
rows followed by a comment such as the next block's ``# version`` (starfile gets a copy with
those lines blank); a stale ``linecache`` after a failed read; rows cut short or corrupt
(padded with NaN, or reported without the file's line). Not handled, as RELION does not
write them in files the plugin reads: comments after key-value pairs, quote characters
inside values (starfile reads ``'`` as ``"``; RELION's job.star help texts have them).
"""
import linecache
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import starfile

from ..errors import StarError

# One value of a loop row (quoted, or bare) or a comment to the end of the line.
_FIELD_RE = re.compile(rb"""(?<!\S)(?:"[^"\n]*"|'[^'\n]*')(?!\S)|(?<!\S)#.*|\S+""")
_CUT_NUMBER_RE = re.compile(r'[-+]?(\d+\.?\d*|\.\d+)?([eE][-+]?)?$')
_TEXT_ENDS = ('Name', 'Image', 'Zernike')     # RELION labels that always hold text


@dataclass
class StarDocument:
    """The blocks of a STAR file in file order (name -> DataFrame for a loop, dict for
    key-value pairs), the number of its ``# version`` line (``'30001'``) and its path."""

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
class Block:
    """Where a block starts (its ``data_`` line), its kind ('loop', 'pairs' or 'empty'),
    labels and, for a loop, where its rows start; :func:`read_star` sets where it ends."""

    name: str
    start: int
    kind: str = 'empty'
    labels: list = field(default_factory=list)
    body: int = None
    end: int = None


def read_star(path, blocks=None):
    """Read a STAR file: a :class:`StarDocument`; with ``blocks`` (names), only those (the
    blocks after the last of them are not parsed). :class:`StarError` if the file is not a
    readable STAR file, lacks a block asked for, or has a row that is wrong (naming it)."""
    path = Path(path)
    try:
        data = path.read_bytes()
        data.decode('utf-8')
    except (OSError, UnicodeDecodeError) as exc:
        raise open_error(path, exc) from None
    outline = list(iter_blocks(path, data))
    if not outline:
        raise StarError(path, f'{"no data_ block" if data.strip() else "empty file"}: '
                              f'not a STAR file')
    wanted = {b.name for b in outline} if blocks is None else set(blocks)
    missing = sorted(wanted - {b.name for b in outline})
    if missing:
        raise StarError(path, f'no data_{missing[0]} block (blocks present: '
                              f'{", ".join("data_" + b.name for b in outline)})')
    chosen = [b for b in outline if b.name in wanted]
    for block, end in zip(outline, [b.start for b in outline[1:]] + [len(data)]):
        block.end = end
    parsed = [b for b in outline[:outline.index(chosen[-1]) + 1] if b.kind != 'empty']
    contents = _read_with_starfile(path, data, parsed)
    version = next(filter(None, (version_before(data, b.start) for b in outline)), None)
    return StarDocument({b.name: contents.get(b.name, {}) for b in chosen}, version, path)


def read_particles_star(path):
    """The particle table (``data_particles``, RELION 3.0's ``data_`` or ``data_images``,
    else the first loop with ``rlnImageName``) and optics table of a file: ParticlesStar."""
    doc = read_star(path)
    loops = {name: b for name, b in doc.blocks.items()
             if isinstance(b, pd.DataFrame) and 'rlnImageName' in b.columns}
    name = next((n for n in ('particles', '', 'images') if n in loops), next(iter(loops), None))
    if name is None:
        raise StarError(doc.path, 'no particles table (no loop block with _rlnImageName)')
    optics = doc.blocks.get('optics')
    return ParticlesStar(loops[name], optics if isinstance(optics, pd.DataFrame) else None,
                         doc.version, doc.path)


def open_error(path, exc):
    """The StarError for a file that cannot be opened or decoded (an OSError otherwise)."""
    if isinstance(exc, UnicodeDecodeError):
        return StarError(path, f'not a text STAR file (byte {exc.start} is not UTF-8)')
    reasons = {FileNotFoundError: 'file not found',
               IsADirectoryError: 'is a folder, not a STAR file'}
    return StarError(path, reasons[type(exc)]) if type(exc) in reasons else exc


def line_number(data, offset):
    return data.count(b'\n', 0, offset) + 1


def next_data_line(data, pos):
    """Offset of the next line that starts a ``data_`` block, or the length of ``data``."""
    while True:
        pos = data.find(b'data_', pos)
        if pos < 0:
            return len(data)
        line_start = data.rfind(b'\n', 0, pos) + 1
        if not data[line_start:pos].strip():
            return line_start
        pos += 5


def significant_lines(data, start, end):
    """Yield (offset, length, stripped text) of the lines that are neither blank nor comments."""
    for line in bytes(data[start:end]).split(b'\n'):
        text = line.strip()
        if text and not text.startswith(b'#'):
            yield start, len(line), text
        start += len(line) + 1


def iter_blocks(path, data):
    """Yield the blocks of ``data`` (bytes or mmap) in file order, lazily (a loop's rows are
    passed at ``find`` speed). StarError for a duplicate block, a loop without labels, a
    key-value line that is not ``_label value``."""
    seen = set()
    start = next_data_line(data, 0)
    while start < len(data):
        block = Block(data[start:start + 256].split()[0][5:].decode('utf-8', 'replace'), start)
        if block.name in seen:
            raise StarError(path, f'duplicate block data_{block.name} '
                                  f'(line {line_number(data, start)})')
        seen.add(block.name)
        start = _read_header(path, data, block)
        yield block
        if block.kind == 'loop':
            start = next_data_line(data, start)


def _read_header(path, data, block):
    """Fill in the kind, labels and body of a block; return the offset where the next block
    may start."""
    pos = data.find(b'\n', block.start) + 1 or len(data)
    while pos < len(data):
        end = data.find(b'\n', pos) + 1 or len(data)
        line = data[pos:end].strip()
        if block.kind == 'loop':
            if not line.startswith(b'_'):
                break
            block.labels.append(line.split()[0][1:].decode('utf-8', 'replace'))
        elif line.startswith(b'data_'):
            return pos
        elif line.startswith(b'loop_') and block.kind == 'empty':
            block.kind = 'loop'
        elif line and not line.startswith(b'#'):
            words = line.decode('utf-8', 'replace').split(None, 1)
            if not words[0].startswith('_') or len(words) != 2:
                raise StarError(path, f'data_{block.name}, line {line_number(data, pos)}: '
                                      f'expected "_label value", found {" ".join(words)[:60]!r}')
            block.kind = 'pairs'
            block.labels.append(words[0][1:])
        pos = end
    if block.kind == 'loop':
        block.body = pos
        if not block.labels:
            raise StarError(path, f'data_{block.name}: loop_ is not followed by column labels')
    return pos


def version_before(data, start):
    """The number of the ``# version NNN`` line among the comment lines before ``start``."""
    for line in reversed(data[max(0, start - 512):start].split(b'\n')):
        words = line.split()
        if words[:2] == [b'#', b'version'] and len(words) > 2:
            return words[2].decode()
        if words and not words[0].startswith(b'#'):
            return None


def _read_with_starfile(path, data, blocks):
    """Block name -> content of the (non-empty) blocks given, parsed by starfile (from a
    temporary copy when lines must be blanked)."""
    as_text = sorted({label for b in blocks for label in b.labels if label.endswith(_TEXT_ENDS)})
    copy = _blank_comments_after_empty_loops(data, blocks)
    try:
        with tempfile.NamedTemporaryFile('wb', suffix='.star') as fh:
            if copy is not None:
                fh.write(copy)
                fh.flush()
            linecache.clearcache()      # starfile reads lines through it: a failed read left some
            parsed = starfile.read(path if copy is None else fh.name, read_n_blocks=len(blocks),
                                   always_dict=True, parse_as_string=as_text)
    except (ValueError, TypeError, IndexError) as exc:  # pandas' ParserError is a ValueError
        for block in (b for b in blocks if b.kind == 'loop'):
            _check_fields(path, data, block)
        raise StarError(path, f'cannot be read ({type(exc).__name__}: {str(exc).strip()})') \
            from None
    # starfile gives an empty block the next block's content: contents are taken in order.
    contents = dict(zip([b.name for b in blocks], parsed.values()))
    for block in (b for b in blocks if b.kind == 'loop'):
        _check_loop(path, data, block, contents[block.name])
    return contents


def _blank_comments_after_empty_loops(data, blocks):
    """The file with the comment lines after loops without rows blanked (line numbers
    kept), or None when there are none: starfile fails on them ("No columns to parse")."""
    pieces, pos = [], 0
    for b in blocks:
        if b.kind == 'loop' and data[b.body:b.end].strip() and \
                not any(significant_lines(data, b.body, b.end)):
            pieces += [data[pos:b.body], b'\n' * data.count(b'\n', b.body, b.end)]
            pos = b.end
    return b''.join(pieces + [data[pos:]]) if pieces else None


def _check_loop(path, data, block, df):
    """Raise StarError for rows starfile read without complaint but wrongly: too few fields
    (padded with NaN), a quote left open (lines joined), a file cut inside a number."""
    if len(df) and len(df.columns) and df.iloc[:, -1].isna().any():
        _check_fields(path, data, block)
    if data.find(b'"', block.body, block.end) >= 0 or data.find(b"'", block.body, block.end) >= 0:
        n_lines = sum(1 for _ in significant_lines(data, block.body, block.end))
        if n_lines != len(df):
            _check_fields(path, data, block)
            raise StarError(path, f'data_{block.name}: {len(df)} rows read from {n_lines} lines '
                                  f'(a quote not closed?)')
    if block.end == len(data) and not data.endswith(b'\n') and len(df) > 1:
        for col in [c for c in df.columns[df.dtypes == object] if not c.endswith(_TEXT_ENDS)]:
            last, head = df[col].iloc[-1], df[col].iloc[:-1]
            if (isinstance(last, str) and _CUT_NUMBER_RE.match(last)
                    and not (pd.to_numeric(head, errors='coerce').isna() & head.notna()).any()):
                raise StarError(path, f'data_{block.name}: last row has {last!r} in numeric '
                                      f'column _{col} (truncated file?)')


def _check_fields(path, data, block):
    """Raise StarError at the first row whose number of fields is not the number of columns
    (saying so once when all rows have the same wrong number)."""
    ncols = len(block.labels)
    counts = ((offset, sum(1 for token in _FIELD_RE.findall(line) if token[:1] != b'#'))
              for offset, _, line in significant_lines(data, block.body, block.end))
    first = next(counts, (0, ncols))
    bad = first if first[1] != ncols else next((c for c in counts if c[1] != ncols), None)
    if bad is None:
        return
    if bad is first and all(n == bad[1] for _, n in counts):
        raise StarError(path, f'data_{block.name} (line {line_number(data, bad[0])}): rows have '
                              f'{bad[1]} fields but the loop declares {ncols} columns')
    tail = ' (truncated or corrupt row)' if bad[1] < ncols else ''
    raise StarError(path, f'data_{block.name}, line {line_number(data, bad[0])}: {bad[1]} '
                          f'fields instead of {ncols}{tail}')
