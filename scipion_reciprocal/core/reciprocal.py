"""Reciprocal analysis of classifications: which classes of different jobs hold the same
particles.

Inputs are :class:`Classification` objects (a particle key, a class and optionally a
confidence per row), built from RELION STAR files (:func:`classification_from_star`,
:func:`classifications_from_relion`) or from a table (:func:`classification_from_dataframe`,
e.g. a Scipion SetOfClasses read with SQL). :func:`reciprocal_analysis` matches particles
across jobs and returns a :class:`ReciprocalResult` with every table; files are written by
:func:`scipion_reciprocal.core.reciprocal_io.write_results`.

Rows, not images, are counted: in a symmetry-expanded job an image has several rows, and
the k-th row of an image in one job is matched with the k-th row of the same image in
another (rows in file order). Results give both row and unique-image counts.
"""

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..formats.errors import StarError
from ..formats.star import StarTable
from . import particle_keys as pk
from . import relion_jobs
from .reciprocal_tables import ReciprocalResult, compute_tables

__all__ = ['Classification', 'ReciprocalError', 'ReciprocalResult', 'KEYS', 'MIN_OVERLAP',
           'MIN_FRACTION',
           'classification_from_star', 'classification_from_dataframe', 'keys_from_dataframe',
           'keys_from_star',
           'classifications_from_relion', 'reciprocal_analysis', 'DEFAULT_COLUMNS']

#: Matching keys: image location, original image name, micrograph + coordinates, id.
KEYS = ('image', 'original', 'coordinates', 'id')
_ORIGINAL_LABELS = ('rlnImageOriginalName', 'rlnOriginalImageName')
CONFIDENCE_LABEL = 'rlnMaxValueProbDistribution'
#: Intersection subsets the command line and the protocol write by default: class pairs
#: sharing at least this many particles, holding at least this fraction of one of the two
#: classes (the pairs that hold a state; every pair that shares particles with 1 and 0).
MIN_OVERLAP, MIN_FRACTION = 10, 0.1
#: Column names :func:`classification_from_dataframe` looks for, by role.
DEFAULT_COLUMNS = {'class': 'class', 'image': 'image', 'index': 'index', 'stack': 'stack',
                   'original': 'original', 'id': 'id', 'micrograph': 'micrograph', 'x': 'x',
                   'y': 'y', 'pixel_size': 'pixel_size', 'confidence': 'confidence',
                   'row_id': 'row_id'}


class ReciprocalError(ValueError):
    """Inputs that cannot be analysed together (the message names the jobs and files)."""


@dataclass
class Classification:
    """One classification: a class for every row of a particle table.

    Attributes
    ----------
    name : str
        Job name used in file names and tables (``'job085'``).
    keys : ParticleKeys
        Particle identity of every row.
    classes : numpy.ndarray of int64
        Class number of every row.
    confidence : numpy.ndarray of float64, optional
        ``rlnMaxValueProbDistribution`` of every row.
    row_ids : numpy.ndarray, optional
        Identifier of every row in the caller's terms (Scipion object ids); default: the
        row position. Subsets are returned as positions; ``row_ids[positions]`` maps them.
    class_ids : numpy.ndarray of int64, optional
        Every class of the job, empty ones included (from the model file or the set).
    number : int, optional
        Job number written in the long-form CSV files (85 for ``job085``); default: the
        number in ``name``, else the job's position in the analysis (1, 2, ...).
    kind : str, optional
        ``'2D'`` or ``'3D'``.
    source : StarTable, optional
        The STAR file the rows come from: subsets are written from it verbatim.
    job_dir : pathlib.Path, optional
        The RELION job folder.
    cs_source : CsParticles, optional
        The cryoSPARC particles the rows are (:mod:`~scipion_reciprocal.formats.cryosparc`):
        subsets are also written from it as ``.cs`` files, every field verbatim.
    class_maps : pandas.DataFrame, optional
        The class maps of a job that is not a RELION job folder (a cryoSPARC job), in the
        layout of :func:`~scipion_reciprocal.core.relion_jobs.class_maps`.
    """

    name: str
    keys: pk.ParticleKeys
    classes: np.ndarray
    confidence: np.ndarray = None
    row_ids: np.ndarray = None
    class_ids: np.ndarray = None
    number: int = None
    kind: str = None
    source: StarTable = None
    job_dir: Path = None
    cs_source: object = None
    class_maps: object = None

    def __post_init__(self):
        self.classes = np.asarray(self.classes)
        if self.classes.dtype.kind not in 'iu':
            if self.classes.dtype.kind == 'f' and np.all(np.mod(self.classes, 1) == 0):
                self.classes = self.classes.astype(np.int64)
            else:
                raise ReciprocalError(f'{self.name}: class numbers must be integers')
        self.classes = self.classes.astype(np.int64, copy=False)
        self._refuse_classes_below_one()
        n = len(self.classes)
        if len(self.keys) != n:
            raise ReciprocalError(f'{self.name}: {len(self.keys)} keys for {n} classes')
        if self.confidence is not None:
            self.confidence = np.asarray(self.confidence, dtype=np.float64)
            if len(self.confidence) != n:
                raise ReciprocalError(f'{self.name}: {len(self.confidence)} confidences for '
                                      f'{n} rows')
        if self.row_ids is not None and len(self.row_ids) != n:
            raise ReciprocalError(f'{self.name}: {len(self.row_ids)} row ids for {n} rows')
        if self.class_ids is not None:
            self.class_ids = np.unique(np.asarray(self.class_ids, dtype=np.int64))
        if self.number is None:
            m = re.search(r'job0*(\d+)', self.name)
            self.number = int(m.group(1)) if m else None

    def _refuse_classes_below_one(self):
        """Class numbers start at 1 (RELION, Scipion); 0 or less is a damaged or foreign
        file (cryoSPARC's 0-based classes are renumbered before they get here)."""
        below = self.classes < 1
        if below.any():
            row = int(np.argmax(below))
            where = f'{self.source.path}: ' if self.source is not None else ''
            raise ReciprocalError(f'{where}{self.name}: class number {self.classes[row]} in '
                                  f'row {row + 1} ({int(below.sum())} rows with a class below '
                                  f'1): class numbers start at 1')

    def __len__(self):
        return len(self.classes)

    @property
    def all_classes(self):
        """Sorted class numbers: those declared (``class_ids``) and those used."""
        used = np.unique(self.classes)
        return used if self.class_ids is None else np.union1d(used, self.class_ids)

    @property
    def source_file(self):
        """The file the rows were read from (STAR, else ``.cs``), or None."""
        for source in (self.source, self.cs_source):
            if source is not None:
                return source.path
        return None

    @property
    def ids(self):
        """Row identifiers (``row_ids``, or positions)."""
        return np.arange(len(self)) if self.row_ids is None else np.asarray(self.row_ids)


# ---------------------------------------------------------------------- building

def _default_name(path):
    path = Path(path)
    for part in (path.parent.name, path.stem):
        m = re.search(r'job0*(\d+)', part)
        if m:
            return f'job{int(m.group(1)):03d}'
    return path.stem


def _micrograph_pixel_size(table, optics_groups, pixel_size):
    """Micrograph pixel size of every row (Angstrom)."""
    if pixel_size is not None:
        return float(pixel_size)
    optics = table.optics()
    for label in ('rlnMicrographPixelSize', 'rlnMicrographOriginalPixelSize'):
        if optics is not None and label in optics.columns and 'rlnOpticsGroup' in optics.columns:
            lookup = pd.Series(optics[label].astype(float).to_numpy(),
                               index=optics['rlnOpticsGroup'].astype(int).to_numpy())
            if optics_groups is None:
                if len(lookup) == 1:
                    return float(lookup.iloc[0])
                break
            values = lookup.reindex(optics_groups).to_numpy()
            if np.isnan(values).any():
                raise StarError(table.path, 'particles refer to optics groups absent from '
                                            'data_optics')
            return values
    raise StarError(table.path, 'no micrograph pixel size (rlnMicrographPixelSize or '
                                'rlnMicrographOriginalPixelSize in data_optics): give it '
                                'to match coordinates in Angstrom')


def classification_from_star(path, name=None, key='image', pixel_size=None, class_ids=None,
                             read_confidence=False, number=None, kind=None, job_dir=None):
    """Read a classification from a RELION particles STAR file (only the columns needed).

    Parameters
    ----------
    path : path
        ``run_itNNN_data.star`` or any particles file with ``rlnClassNumber``.
    name : str, optional
        Default: ``jobNNN`` from the folder or file name, else the file stem.
    key : {'image', 'original', 'coordinates'}
        Particle identity: ``rlnImageName``; ``rlnImageOriginalName``; or
        ``rlnMicrographName`` + ``rlnCoordinateX/Y`` (scaled to Angstrom by ``pixel_size``
        or the optics table's micrograph pixel size).
    pixel_size : float, optional
        Micrograph pixel size in Angstrom, for ``key='coordinates'``.
    class_ids : array-like of int, optional
        Every class of the job, so that empty classes get rows and columns.
    read_confidence : bool
        Read ``rlnMaxValueProbDistribution`` (needed to filter on it) when present.
    number, kind, job_dir
        See :class:`Classification`.

    Raises
    ------
    StarError
        If the file is unreadable or lacks a column the key needs (names file and column).
    """
    if key not in KEYS[:3]:
        raise ValueError(f'key must be one of {KEYS[:3]}, not {key!r}')
    table = StarTable.open(path)
    name = name or _default_name(path)
    needed = ['rlnClassNumber'] + _key_labels(table, key, pixel_size)
    table.require(needed, f'the {key} key of job {name}')
    if read_confidence and CONFIDENCE_LABEL in table.columns:
        needed.append(CONFIDENCE_LABEL)
    columns = table.read_raw(needed, kinds=_STAR_KINDS)     # (one pass: before len(table))
    if not len(table):
        raise StarError(table.path, f'data_{table.block} has no rows: job {name} has no '
                                    f'particles')
    keys = _star_keys(table, columns, needed[1], key, pixel_size)
    table.close()
    return Classification(name, keys, columns['rlnClassNumber'],
                          confidence=columns.get(CONFIDENCE_LABEL), class_ids=class_ids,
                          number=number, kind=kind, source=table, job_dir=job_dir)


_STAR_KINDS = {'rlnClassNumber': 'int', 'rlnImageName': 'text', 'rlnMicrographName': 'text',
               'rlnCoordinateX': 'float', 'rlnCoordinateY': 'float', 'rlnOpticsGroup': 'int',
               CONFIDENCE_LABEL: 'float', **{c: 'text' for c in _ORIGINAL_LABELS}}


def _key_labels(table, key, pixel_size):
    """The STAR columns a key reads (the identity column first)."""
    if key == 'image':
        return ['rlnImageName']
    if key == 'original':
        return [next((c for c in _ORIGINAL_LABELS if c in table.columns), _ORIGINAL_LABELS[0])]
    labels = ['rlnMicrographName', 'rlnCoordinateX', 'rlnCoordinateY']
    if pixel_size is None and 'rlnOpticsGroup' in table.columns:
        labels.append('rlnOpticsGroup')
    return labels


def _star_keys(table, columns, first, key, pixel_size, micrograph_stems=False):
    """ParticleKeys of the columns read for a key (``first``: its identity column)."""
    try:
        if key == 'coordinates':
            size = _micrograph_pixel_size(table, columns.get('rlnOpticsGroup'), pixel_size)
            return pk.coordinate_keys(columns['rlnMicrographName'], columns['rlnCoordinateX'],
                                      columns['rlnCoordinateY'], size, stems=micrograph_stems)
        return pk.location_keys(columns[first])
    except ValueError as exc:
        raise StarError(table.path, f'{first}: {exc}') from None


def keys_from_star(path, key='image', pixel_size=None, micrograph_stems=False):
    """The particle keys of a particles STAR file (e.g. particles to analyse alone; see
    :func:`classification_from_star` for ``key`` and ``pixel_size``; ``micrograph_stems``
    as in :func:`classification_from_dataframe`, to match classifications keyed so)."""
    if key not in KEYS[:3]:
        raise ValueError(f'key must be one of {KEYS[:3]}, not {key!r}')
    with StarTable.open(path) as table:
        needed = _key_labels(table, key, pixel_size)
        table.require(needed, f'the {key} key of the chosen particles')
        columns = table.read_raw(needed, kinds=_STAR_KINDS)
        return _star_keys(table, columns, needed[0], key, pixel_size, micrograph_stems)


def classification_from_dataframe(frame, name, key='image', columns=None, pixel_size=None,
                                  class_ids=None, number=None, kind=None,
                                  micrograph_stems=False):
    """Build a classification from a table with one row per particle.

    Parameters
    ----------
    frame : pandas.DataFrame
    name : str
    key : {'image', 'original', 'coordinates', 'id'}
        ``'image'`` reads an ``index@stack`` column (role ``image``), or else the image
        number and file name columns (roles ``index`` and ``stack``, as Scipion stores
        them); ``'original'`` an ``index@stack`` column (role ``original``);
        ``'coordinates'`` roles ``micrograph``, ``x``, ``y`` (pixels) with ``pixel_size``
        (a number, or a ``pixel_size`` column); ``'id'`` integer ids (role ``id``).
    columns : dict, optional
        Role -> column name, overriding :data:`DEFAULT_COLUMNS`. The ``class`` role is
        required; ``confidence`` and ``row_id`` are used when present.
    micrograph_stems : bool
        Compare micrographs by file stem (:func:`~.particle_keys.micrograph_stem`: across
        software, e.g. a RELION and a cryoSPARC import) rather than by path.

    Raises
    ------
    ReciprocalError
        If a column the key needs is absent (the message names the job and column).
    """
    keys = keys_from_dataframe(frame, name, key, columns, pixel_size, micrograph_stems)
    cols = {**DEFAULT_COLUMNS, **(columns or {})}
    if cols['class'] not in frame.columns:
        raise ReciprocalError(f'{name}: no column {cols["class"]} (the class numbers; columns: '
                              f'{", ".join(map(str, frame.columns))})')
    classes = frame[cols['class']].to_numpy()
    confidence = frame[cols['confidence']].to_numpy() if cols['confidence'] in frame else None
    row_ids = frame[cols['row_id']].to_numpy() if cols['row_id'] in frame else None
    return Classification(name, keys, classes, confidence=confidence, row_ids=row_ids,
                          class_ids=class_ids, number=number, kind=kind)


def keys_from_dataframe(frame, name, key='image', columns=None, pixel_size=None,
                        micrograph_stems=False):
    """The particle keys of a table with one row per particle (see
    :func:`classification_from_dataframe` for ``key``, ``columns``, ``pixel_size`` and
    ``micrograph_stems``).

    Raises
    ------
    ReciprocalError
        If a column the key needs is absent (the message names ``name`` and the column).
    """
    if key not in KEYS:
        raise ValueError(f'key must be one of {KEYS}, not {key!r}')
    cols = {**DEFAULT_COLUMNS, **(columns or {})}

    def need(*roles):
        missing = [cols[r] for r in roles if cols[r] not in frame.columns]
        if missing:
            raise ReciprocalError(f'{name}: no column {", ".join(missing)} (needed for the '
                                  f'{key} key; columns: {", ".join(map(str, frame.columns))})')
        return [frame[cols[r]].to_numpy() for r in roles]

    if key == 'image' and cols['image'] not in frame.columns:
        index, stacks = need('index', 'stack')
        return pk.location_keys_from_parts(index, stacks)
    if key in ('image', 'original'):
        (names,) = need(key)
        return pk.location_keys(np.asarray(names, dtype=object))
    if key == 'coordinates':
        mics, x, y = need('micrograph', 'x', 'y')
        size = pixel_size if pixel_size is not None else need('pixel_size')[0]
        return pk.coordinate_keys(np.asarray(mics, dtype=object), x, y, size,
                                  stems=micrograph_stems)
    return pk.id_keys(need('id')[0])


def classifications_from_relion(jobs, project_dir=None, jobs_dir=None, iteration=None,
                                key='image', pixel_size=None, read_confidence=False):
    """Read the last (or a given) iteration of RELION classification jobs.

    Parameters
    ----------
    jobs : str or list of str
        ``'85,86,87'``, ``'Class3D/job085 Class2D/job013'`` (see
        :func:`~scipion_reciprocal.core.relion_jobs.parse_job_list`).
    project_dir, jobs_dir : path, optional
        RELION project folder, or one job-type folder (``.../Class3D``).
    iteration : int, optional
    key, pixel_size, read_confidence
        See :func:`classification_from_star`.

    Returns
    -------
    list of Classification
        With every class of the model file in ``class_ids`` and the job kind.
    """
    job_dirs = relion_jobs.resolve_jobs(jobs, project_dir=project_dir, jobs_dir=jobs_dir)
    data_files = [relion_jobs.find_iteration_file(job_dir, iteration) for job_dir in job_dirs]

    def read(job_dir, data_file):
        try:
            maps = relion_jobs.class_maps(job_dir, iteration)
            class_ids, job_kind = maps['class'].to_numpy(), relion_jobs.job_kind(job_dir, iteration)
        except (relion_jobs.RelionJobError, StarError, KeyError):
            class_ids, job_kind = None, None
        return classification_from_star(
            data_file, name=job_dir.name, key=key, pixel_size=pixel_size, class_ids=class_ids,
            read_confidence=read_confidence, kind=job_kind, job_dir=job_dir)

    # Two jobs at a time: most of the reading is numpy work, which releases the GIL.
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(read, job_dirs, data_files))


# ---------------------------------------------------------------------- analysis

@dataclass
class _Alignment:
    """Which rows of each job are the same particles."""

    kept: list = field(default_factory=list)      # per job: positions kept by the filter
    base: list = field(default_factory=list)      # per job: image number of kept rows
    pids: list = field(default_factory=list)      # per job: particle number of kept rows
    images: list = field(default_factory=list)    # per job: image code (0..) of kept rows
    n_particles: int = 0
    same_order: bool = False                      # every job lists the same rows in order


def _align(classifications, min_confidence, tolerance, warnings, only=None):
    align = _Alignment()
    chosen = _chosen_rows(classifications, only, tolerance) if only is not None else None
    for j, c in enumerate(classifications):
        keep = np.ones(len(c), dtype=bool)
        threshold = min_confidence.get(c.name) if isinstance(min_confidence, dict) \
            else min_confidence
        if threshold is not None:
            if c.confidence is None:
                warnings.append(f'{c.name}: no {CONFIDENCE_LABEL} column, not filtered on '
                                f'confidence')
            else:
                keep = c.confidence >= threshold
                if not keep.all():
                    warnings.append(f'{c.name}: {len(c) - int(keep.sum())} of {len(c)} rows '
                                    f'below confidence {threshold} left out')
        if chosen is not None:
            if not chosen[j].all():
                warnings.append(f'{c.name}: {len(c) - int(chosen[j].sum())} of {len(c)} rows '
                                f'are not among the {len(only)} chosen particles: left out')
            keep = keep & chosen[j]
        align.kept.append(np.flatnonzero(keep) if not keep.all() else np.arange(len(c)))
    keys = [c.keys.take(k) for c, k in zip(classifications, align.kept)]
    try:
        align.base = pk.match_particles(keys, tolerance)
    except ValueError as exc:
        raise ReciprocalError(str(exc)) from None
    first = align.base[0]
    lengths = [len(b) for b in align.base]
    if all(len(b) == len(first) and np.array_equal(b, first) for b in align.base[1:]):
        codes, _ = pd.factorize(first)      # same particles in the same order
        codes = codes.astype(np.int64)
        align.images = [codes] * len(keys)
        pids = np.arange(len(first), dtype=np.int64)
        align.pids = [pids] * len(keys)
        align.n_particles = len(first)
        align.same_order = True
        return align
    codes, _ = pd.factorize(np.concatenate(align.base))
    codes = codes.astype(np.int64)
    parts = np.split(codes, np.cumsum(lengths)[:-1])
    align.images = parts
    # k-th row of an image in one job <-> k-th row of that image in another
    occurrence = np.concatenate([_occurrence(part) for part in parts])
    pairs = codes * (int(occurrence.max(initial=0)) + 1) + occurrence
    pids, uniques = pd.factorize(pairs)
    align.pids = np.split(pids.astype(np.int64), np.cumsum(lengths)[:-1])
    align.n_particles = len(uniques)
    return align


def _chosen_rows(classifications, only, tolerance):
    """Per classification, whether each row is one of the particles of ``only``."""
    if only.kind != classifications[0].keys.kind:
        raise ReciprocalError(f'the chosen particles are keyed by {only.kind}, the '
                              f'classifications by {classifications[0].keys.kind}')
    try:
        numbers = pk.match_particles([c.keys for c in classifications] + [only], tolerance)
    except ValueError as exc:
        raise ReciprocalError(str(exc)) from None
    chosen = [np.isin(n, numbers[-1]) for n in numbers[:-1]]
    for c, mask in zip(classifications, chosen):
        if not mask.any():
            raise ReciprocalError(f'{c.name}: none of its {len(c)} rows is among the '
                                  f'{len(only)} chosen particles (key: {only.kind})')
    return chosen


def _occurrence(codes):
    """0 for the first row of each code, 1 for the second, ... (file order)."""
    if not len(codes) or np.bincount(codes).max() == 1:
        return np.zeros(len(codes), dtype=np.int64)
    return pd.Series(codes).groupby(codes).cumcount().to_numpy()


def reciprocal_analysis(classifications, min_confidence=None, tolerance=10.0,
                        min_group_size=1, min_overlap=1, min_fraction=0.0, only=None):
    """Compare two or more classifications of the same particles.

    Parameters
    ----------
    classifications : list of Classification
        In the order of the analysis (Sankey diagrams and consecutive pairs follow it).
    min_confidence : float or dict, optional
        Drop rows whose ``rlnMaxValueProbDistribution`` is below this; a dict gives one
        threshold per job name (jobs not in it are not filtered).
    tolerance : float
        Largest distance in Angstrom between coordinates of the same particle (key
        ``'coordinates'`` only).
    min_group_size : int
        Consensus groups smaller than this are listed but not kept.
    min_overlap, min_fraction : int, float
        An intersection subset is kept for a class pair of two jobs when it holds at least
        ``min_overlap`` particles and at least ``min_fraction`` of one of the two classes
        (the larger of its two fractions counts).
    only : ParticleKeys, optional
        Analyse only these particles (keys of the classifications' kind, e.g. from
        :func:`keys_from_dataframe`): the other rows are left out like rows below the
        confidence threshold, with a warning.

    Returns
    -------
    ReciprocalResult

    Raises
    ------
    ReciprocalError
        Fewer than two classifications, duplicate names, keys of different kinds, or jobs
        that share no particles.
    """
    classifications = list(classifications)
    if len(classifications) < 2:
        first = classifications[0].name if classifications else 'none'
        raise ReciprocalError(f'reciprocal analysis needs at least two classifications '
                              f'(got {len(classifications)}: {first})')
    names = [c.name for c in classifications]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ReciprocalError(f'classification names must differ: {", ".join(dup)} given twice')
    kinds = {c.name: c.keys.kind for c in classifications}
    if len(set(kinds.values())) > 1:
        raise ReciprocalError('particle keys of different kinds: ' +
                              ', '.join(f'{n}: {k}' for n, k in kinds.items()))
    for i, c in enumerate(classifications, 1):
        if c.number is None:
            c.number = i
    warnings = []
    align = _align(classifications, min_confidence, tolerance, warnings, only)
    return compute_tables(classifications, align, warnings, dict(
        key=classifications[0].keys.kind, min_confidence=min_confidence,
        tolerance=tolerance if classifications[0].keys.kind == 'coordinates' else None,
        min_group_size=int(min_group_size), min_overlap=int(min_overlap),
        min_fraction=float(min_fraction)), ReciprocalError)
