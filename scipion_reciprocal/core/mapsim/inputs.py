"""Input maps for map clustering: paths or arrays, names, and the names CSV."""
import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import MapClusteringError

NAMES_CSV_HEADER = ('original_filename', 'custom_name')


@dataclass
class MapInput:
    """One input map: a file, or an array with its voxel size.

    Attributes
    ----------
    name : str
        Name shown in tables and plots.
    path : str, optional
        MRC file.
    data : numpy.ndarray, optional
        The map itself, indexed ``[z, y, x]``.
    voxel_size : float, optional
        Å per voxel; required with ``data``, overrides the file header with ``path``.
    """
    name: str
    path: str = None
    data: np.ndarray = None
    voxel_size: float = None

    def load(self):
        """The map (float32) and its voxel size.

        Raises
        ------
        MapClusteringError
            If the file cannot be read or the voxel size is unknown.
        """
        if self.data is not None:
            data = np.asarray(self.data)
            voxel = self.voxel_size
        else:
            from scipion_reciprocal.formats.errors import FormatError
            from scipion_reciprocal.formats.mrc import read_map
            try:
                data, voxel = read_map(self.path)
            except FormatError as exc:
                raise MapClusteringError(f'map {self.name}: {exc}') from None
            if self.voxel_size:
                voxel = self.voxel_size
        if not voxel or not np.isfinite(voxel) or voxel <= 0:
            where = self.path or self.name
            raise MapClusteringError(f'map {where}: voxel size unknown ({voxel}); give it '
                                     f'explicitly')
        return data, float(voxel)


def safe_filename(name):
    """A file-name-safe version of a map name (letters, digits, ``._-``; others become ``_``)."""
    cleaned = re.sub(r'[^A-Za-z0-9._-]+', '_', str(name)).strip('._') or 'map'
    return cleaned


def read_names_csv(path):
    """Read a names CSV (``original_filename,custom_name``).

    Returns
    -------
    dict
        ``original_filename -> custom_name``, in file order.

    Raises
    ------
    MapClusteringError
        Missing file, wrong header, empty or duplicate entries; the message names the file.
    """
    path = Path(path)
    try:
        with open(path, newline='', encoding='utf-8-sig') as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise MapClusteringError(f'names CSV {path}: cannot be read ({exc.strerror})') from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise MapClusteringError(f'names CSV {path}: empty file; expected the header '
                                 f'"{",".join(NAMES_CSV_HEADER)}"')
    header = tuple(cell.strip() for cell in rows[0])
    if header != NAMES_CSV_HEADER:
        raise MapClusteringError(f'names CSV {path}: header is "{",".join(rows[0])}", expected '
                                 f'"{",".join(NAMES_CSV_HEADER)}"')
    names = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise MapClusteringError(f'names CSV {path}: row {line} must have two non-empty '
                                     f'values, got {row}')
        key, value = row[0].strip(), row[1].strip()
        if key in names:
            raise MapClusteringError(f'names CSV {path}: {key} is listed twice')
        names[key] = value
    return names


def _lookup(names, path, fallback):
    """The CSV key giving a map its custom name: the key equal to its path, file name or stem,
    else the one key whose own file name or stem matches (keys written with folders); None
    when there is none."""
    if path is None:
        return fallback if fallback in names else None
    p = Path(path)
    for key in (str(path), p.name, p.stem):
        if key in names:
            return key
    hits = [key for key in names if Path(key).name in (p.name, p.stem)
            or Path(key).stem == p.stem]
    return hits[0] if len(hits) == 1 else None


def collect_inputs(maps, voxel_sizes=None, names=None, names_csv=None, warn=None):
    """Turn paths, arrays or :class:`MapInput` objects into named inputs.

    Parameters
    ----------
    maps : sequence
        MRC paths (str or Path), 3D arrays, or :class:`MapInput` objects.
    voxel_sizes : float or sequence of float, optional
        Voxel sizes (Å): required for arrays, override file headers when given.
    names : sequence of str, optional
        Names of the maps (default: file stem, or ``map_<i>`` for arrays).
    names_csv : str or Path, optional
        CSV ``original_filename,custom_name``; every map must be listed (by full path, file
        name or stem; arrays by their name).
    warn : callable, optional
        Called with a one-line warning when the names CSV lists files that are not inputs.

    Returns
    -------
    list of MapInput

    Raises
    ------
    MapClusteringError
        Fewer than 2 maps, a missing voxel size, names of the wrong length, duplicate custom
        names, or a names CSV that misses maps.
    """
    maps = list(maps)
    if len(maps) < 2:
        given = ', '.join(_describe(m) for m in maps) or 'none'
        raise MapClusteringError(f'map clustering needs at least 2 maps, got {len(maps)} '
                                 f'({given})')
    if voxel_sizes is None or np.ndim(voxel_sizes) == 0:
        voxels = [voxel_sizes] * len(maps)
    else:
        voxels = list(voxel_sizes)
        if len(voxels) != len(maps):
            raise MapClusteringError(f'{len(voxels)} voxel sizes given for {len(maps)} maps')
    if names is not None and len(names) != len(maps):
        raise MapClusteringError(f'{len(names)} names given for {len(maps)} maps')
    inputs = []
    for i, (item, voxel) in enumerate(zip(maps, voxels)):
        if isinstance(item, MapInput):
            entry = MapInput(item.name, item.path, item.data, voxel or item.voxel_size)
        elif isinstance(item, (str, Path)):
            entry = MapInput(Path(item).stem, str(item), None, voxel)
        else:
            if voxel is None:
                raise MapClusteringError(f'map {i + 1} is an array: give its voxel size')
            entry = MapInput(f'map_{i + 1}', None, np.asarray(item), voxel)
        if names is not None:
            entry.name = str(names[i])
        inputs.append(entry)
    if names_csv is not None:
        table = read_names_csv(names_csv)
        missing, used = [], set()
        for entry in inputs:
            key = _lookup(table, entry.path, entry.name)
            if key is None:
                missing.append(Path(entry.path).name if entry.path else entry.name)
            else:
                entry.name = table[key]
                used.add(key)
        if missing:
            raise MapClusteringError(f'names CSV {names_csv}: no custom name for '
                                     f'{", ".join(missing)}')
        extra = [key for key in table if key not in used]
        if extra and warn is not None:
            shown = ', '.join(extra[:5]) + (f' and {len(extra) - 5} more' if len(extra) > 5
                                            else '')
            warn(f'names CSV {names_csv}: {len(extra)} of its rows name no input map '
                 f'({shown}); they are ignored')
        seen = {}
        for entry in inputs:
            if entry.name in seen:
                raise MapClusteringError(f'names CSV {names_csv}: custom name {entry.name} is '
                                         f'given to both {seen[entry.name]} and '
                                         f'{entry.path or entry.name}')
            seen[entry.name] = entry.path or entry.name
    _make_unique(inputs)
    return inputs


def _describe(item):
    if isinstance(item, MapInput):
        return item.path or item.name
    if isinstance(item, (str, Path)):
        return str(item)
    return f'array of shape {np.shape(item)}'


def _make_unique(inputs):
    """Suffix repeated names (and names that give the same file name) with _2, _3, ..."""
    used = set()
    for entry in inputs:
        base = entry.name
        candidate, k = base, 1
        while safe_filename(candidate).lower() in used:
            k += 1
            candidate = f'{base}_{k}'
        entry.name = candidate
        used.add(safe_filename(candidate).lower())
