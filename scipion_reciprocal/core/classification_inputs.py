"""Classifications from any engine: RELION, cryoSPARC, and label files of latent-space methods.

An input is given as text (:func:`parse_input`):

- a RELION classification job folder (``Class3D/job085``): its last (or a given) iteration's
  ``run_itNNN_data.star``;
- a RELION particles STAR file with ``rlnClassNumber``;
- a cryoSPARC job folder (``P12/J30``): the final particles of the classification with their
  classes (which files: :mod:`scipion_reciprocal.formats.cryosparc_jobs`);
- a cryoSPARC ``.cs`` file (the main file of a job folder is joined with that job's
  passthrough files; any other file is read alone);
- a label file with its particle file, ``labels.pkl@particles.star`` (or ``@particles.cs``):
  cryoDRGN's or RECOVAR's k-means labels, one per particle in the particle file's order.

Classes are numbered from 1: cryoSPARC's classes and label files' labels count from 0 and
get + 1 (:data:`ZERO_BASED_OFFSET`).

Particles are matched (:func:`choose_key`) by cryoSPARC ``uid`` where every run has one, by
image location (``index@stack`` / ``blob/path`` + ``blob/idx``, as absolute paths with links
resolved), or by micrograph + coordinates in Angstrom (micrographs by file stem, see
:func:`~.particle_keys.micrograph_stem`); automatically, the first of these under which
every run shares all its particles with the others, else the one that matches most.
"""
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..formats.cryosparc import (BLOB_IDX, BLOB_PATH, CLASS_FIELDS, CS_SUFFIX, UID, CsError,
                                 CsParticles, posterior_field)
from ..formats.cryosparc_jobs import (JOB_JSON, cs_file_name, find_cs_job, job_of_file,
                                      open_cs_file)
from ..formats.errors import FormatError, StarError
from ..formats.labels import LABEL_SUFFIXES, read_labels
from ..formats.result_folder import as_result_folder
from ..formats.star import StarTable, write_particles_star
from . import particle_keys as pk
from . import relion_jobs
from .class_summary import class_map_table, class_sizes
from .cryosparc_relion import (CLASS_OFFSET, LOCATION_FIELDS, hard_classes,
                              micrograph_positions, relion_particles, y_from_bottom)
from .reciprocal import (CONFIDENCE_LABEL, Classification, ReciprocalError,
                         _micrograph_pixel_size)

__all__ = ['InputSpec', 'parse_input', 'read_inputs', 'classifications_from_inputs',
           'choose_key', 'attach_star_sources', 'KEY_ORDER', 'ZERO_BASED_OFFSET',
           'ENGINES']

#: Added to cryoSPARC classes and to label-file labels (both count from 0).
ZERO_BASED_OFFSET = CLASS_OFFSET
#: Automatic matching tries these keys in this order.
KEY_ORDER = ('uid', 'image', 'coordinates')
KEY_DESCRIPTIONS = {'uid': 'cryoSPARC uid', 'image': 'image location (stack + index)',
                    'original': 'original image name',
                    'coordinates': 'micrograph + coordinates'}
ENGINES = ('RELION', 'cryoSPARC', 'labels')
_RELION_KINDS = {'rlnClassNumber': 'int', 'rlnImageName': 'text', 'rlnMicrographName': 'text',
                 'rlnCoordinateX': 'float', 'rlnCoordinateY': 'float', 'rlnOpticsGroup': 'int',
                 CONFIDENCE_LABEL: 'float'}


@dataclass
class InputSpec:
    """One input as given on the command line.

    Attributes
    ----------
    text : str
    kind : str
        ``'relion_job'``, ``'star'``, ``'cryosparc_job'``, ``'cs'`` or ``'labels'``.
    path : pathlib.Path
        Job folder, STAR or ``.cs`` file, or label file.
    particles : InputSpec, optional
        For ``'labels'``: the particle file the labels follow.
    """

    text: str
    kind: str
    path: Path
    particles: 'InputSpec' = None


def parse_input(text):
    """Tell what an input is (see the module docstring).

    Raises
    ------
    FormatError
        If the path does not exist or is none of the kinds read (names the path).
    """
    text = str(text).strip()
    head, at, tail = text.partition('@')
    if at and Path(head).suffix.lower() in LABEL_SUFFIXES:
        particles = parse_input(tail)
        if particles.kind not in ('star', 'cs'):
            raise FormatError(tail, f'the particles of label file {head} must be a STAR or '
                                    f'.cs file')
        return InputSpec(text, 'labels', Path(head), particles)
    path = Path(text)
    if path.is_dir():
        if (path / JOB_JSON).is_file() or re.fullmatch(r'J\d+', path.name):
            return InputSpec(text, 'cryosparc_job', path)
        if not relion_jobs.iteration_files(path).empty:
            return InputSpec(text, 'relion_job', path)
        raise FormatError(path, 'neither a RELION classification job (run_itNNN_data.star) '
                                f'nor a cryoSPARC job folder ({JOB_JSON})')
    if not path.exists():
        raise FormatError(path, 'input not found')
    suffix = path.suffix.lower()
    if suffix == '.star':
        return InputSpec(text, 'star', path)
    if suffix == CS_SUFFIX:
        return InputSpec(text, 'cs', path)
    raise FormatError(path, 'unknown input kind: give a RELION job folder or STAR file, a '
                            'cryoSPARC job folder or .cs file, or labels.pkl@particles.star')


@dataclass
class _Run:
    """One input read: classes, and its particle identities built on demand."""

    name: str
    engine: str
    files: str
    classes: np.ndarray
    keys: dict                      # key name -> callable() -> ParticleKeys (or variants)
    confidence: np.ndarray = None
    class_ids: np.ndarray = None
    kind: str = None
    job_dir: Path = None
    star: StarTable = None
    cs: CsParticles = None
    class_maps: object = None
    cache: dict = field(default_factory=dict)

    def key(self, name, variant=0):
        if (name, variant) not in self.cache:
            built = self.keys[name]()
            self.cache.update({(name, i): k for i, k in
                               enumerate(built if isinstance(built, list) else [built])})
        return self.cache[(name, variant)]

    def variants(self, name):
        self.key(name)
        return sorted(v for (n, v) in self.cache if n == name)


# ---------------------------------------------------------------------- reading inputs

def read_inputs(specs, names=None, iteration=None, pixel_size=None, read_confidence=False):
    """Read every input (classes, confidences, how to identify particles)."""
    specs = [s if isinstance(s, InputSpec) else parse_input(s) for s in specs]
    if names is not None and len(names) != len(specs):
        raise ReciprocalError(f'{len(names)} names for {len(specs)} inputs')
    runs = [_read(spec, iteration, pixel_size, read_confidence) for spec in specs]
    given = list(names) if names is not None else [r.name for r in runs]
    for run, name in zip(runs, _unique(given)):
        run.name = name
    return runs


def _unique(names):
    out, used = [], set()
    for name in names:
        base, candidate, n = name, name, 2
        while candidate in used:
            candidate, n = f'{base}_{n}', n + 1
        used.add(candidate)
        out.append(candidate)
    return out


def _read(spec, iteration, pixel_size, read_confidence, with_classes=True):
    """Read one input; ``with_classes=False`` reads a particle file for its identities only
    (the particles of a label file)."""
    if spec.kind == 'relion_job':
        return _read_relion_job(spec.path, iteration, pixel_size, read_confidence)
    if spec.kind == 'star':
        return _read_star(spec.path, None, pixel_size, read_confidence, with_classes)
    if spec.kind == 'cryosparc_job':
        job = find_cs_job(spec.path.parent, spec.path.name)
        return _with_class_maps(_read_cs(job.open(), job.uid, pixel_size, kind=job.kind,
                                         n_classes=len(job.class_maps()) or None), job)
    if spec.kind == 'cs':
        run = _read_cs_file(spec.path, pixel_size, with_classes)
        return _with_class_maps(run, job_of_file(spec.path)) if with_classes else run
    return _read_labels(spec, iteration, pixel_size)


def _read_relion_job(job_dir, iteration, pixel_size, read_confidence):
    data = relion_jobs.find_iteration_file(job_dir, iteration)
    run = _read_star(data, Path(job_dir).resolve().parent.parent, pixel_size, read_confidence)
    run.job_dir = job_dir
    if re.fullmatch(r'job\d+', job_dir.name):
        run.name = job_dir.name
    try:
        run.class_ids = relion_jobs.class_maps(job_dir, iteration)['class'].to_numpy()
        run.kind = relion_jobs.job_kind(job_dir, iteration)
    except (FormatError, KeyError):
        pass
    return run


def _read_star(path, project_dir, pixel_size, read_confidence, with_classes=True):
    table = StarTable.open(path)
    if with_classes:
        table.require(['rlnClassNumber'], 'the classes')
        wanted = ['rlnClassNumber'] + ([CONFIDENCE_LABEL] if read_confidence and
                                       CONFIDENCE_LABEL in table.columns else [])
        columns = table.read_raw(wanted, kinds=_RELION_KINDS)
    else:
        columns = {'rlnClassNumber': np.zeros(len(table), dtype=np.int64)}
    table.close()
    m = re.search(r'job0*(\d+)', f'{Path(path).parent.name} {Path(path).stem}')
    name = f'job{int(m.group(1)):03d}' if m else Path(path).stem
    keys = {}
    if 'rlnImageName' in table.columns:
        keys['image'] = lambda: _star_image_keys(table, project_dir)
    if {'rlnMicrographName', 'rlnCoordinateX', 'rlnCoordinateY'} <= set(table.columns):
        keys['coordinates'] = lambda: _star_coordinate_keys(table, pixel_size)
    return _Run(name, 'RELION', str(path), columns['rlnClassNumber'], keys,
                confidence=columns.get(CONFIDENCE_LABEL), star=table)


def _star_image_keys(table, project_dir):
    names = table.read_raw(['rlnImageName'], kinds=_RELION_KINDS)['rlnImageName']
    try:
        keys = pk.location_keys(names)
    except ValueError as exc:
        raise StarError(table.path, f'rlnImageName: {exc}') from None
    table.close()
    root = project_dir or _relion_root(table.path, keys.labels[0] if len(keys.labels) else '')
    return pk.rebase_labels(keys, root)


def _relion_root(star_path, first_stack):
    """The folder RELION image paths of a STAR file are relative to: the first folder above
    the file from which the first stack exists, else the RELION project of a job folder,
    else the file's folder."""
    star_path = Path(star_path).resolve()
    for folder in star_path.parents:
        if first_stack and (folder / first_stack).exists():
            return folder
    if re.fullmatch(r'job\d+', star_path.parent.name):
        return star_path.parent.parent.parent
    return star_path.parent


def _star_coordinate_keys(table, pixel_size):
    wanted = ['rlnMicrographName', 'rlnCoordinateX', 'rlnCoordinateY']
    if pixel_size is None and 'rlnOpticsGroup' in table.columns:
        wanted.append('rlnOpticsGroup')
    columns = table.read_raw(wanted, kinds=_RELION_KINDS)
    size = _micrograph_pixel_size(table, columns.get('rlnOpticsGroup'), pixel_size)
    table.close()
    return pk.coordinate_keys(columns['rlnMicrographName'], columns['rlnCoordinateX'],
                              columns['rlnCoordinateY'], size, stems=True)


def _read_cs_file(path, pixel_size, with_classes=True):
    return _read_cs(open_cs_file(path), cs_file_name(path), pixel_size,
                    with_classes=with_classes)


def _read_cs(particles, name, pixel_size, kind=None, n_classes=None, with_classes=True):
    # the main file's fields this reading needs, in one pass over it
    particles.prefetch([UID] + [f for c in CLASS_FIELDS for f in (c, posterior_field(
        particles.fields, c))] if with_classes else [UID])
    if with_classes:
        hard = hard_classes(particles)
        classes, confidence = hard.classes, hard.confidence
        kind, n_classes = kind or hard.kind, n_classes or hard.n_classes
    else:
        classes, confidence = np.zeros(len(particles), dtype=np.int64), None
    return _Run(name, 'cryoSPARC', ', '.join(str(p) for p in particles.paths), classes,
                _cs_keys(particles, pixel_size), confidence=confidence,
                class_ids=None if n_classes is None else np.arange(1, n_classes + 1),
                kind=kind, cs=particles)


def _with_class_maps(run, job):
    """The run with its cryoSPARC job's class volumes or averages (when ``job`` has
    any), as :func:`.relion_jobs.class_maps` lists RELION's."""
    maps = job.class_maps() if job is not None else {}
    if maps:
        run.class_maps = class_map_table(maps, class_sizes(run.classes, run.class_ids))
    return run


def _cs_keys(particles, pixel_size):
    keys = {}
    if UID in particles:
        keys['uid'] = lambda: pk.uid_keys(particles.column(UID))
    if BLOB_PATH in particles and BLOB_IDX in particles:
        keys['image'] = lambda: _cs_image_keys(particles)
    if all(f in particles for f in LOCATION_FIELDS):
        keys['coordinates'] = lambda: [_cs_coordinate_keys(particles, opposite, pixel_size)
                                       for opposite in (False, True)]
    return keys


def _cs_image_keys(particles):
    particles.prefetch([BLOB_IDX, BLOB_PATH])
    keys = pk.location_keys_from_parts(particles.column(BLOB_IDX).astype(np.int64) + 1,
                                       particles.column(BLOB_PATH))
    keys.labels = np.array([p.lstrip('>') for p in keys.labels], dtype=object)
    root = particles.project_dir or particles.path.resolve().parent
    return pk.rebase_labels(keys, root)


def _cs_coordinate_keys(particles, opposite, pixel_size):
    """Coordinate keys with cryoSPARC's Y measured as :func:`y_from_bottom` says (the
    opposite way when ``opposite``)."""
    flip = y_from_bottom(particles.column('location/micrograph_path'))
    mics, x, y, size = micrograph_positions(particles, flip_y=flip ^ opposite)
    if pixel_size is not None:
        size = pixel_size
    if size is None:
        raise CsError(particles.path, 'no location/micrograph_psize_A: give the micrograph '
                                      'pixel size to match coordinates')
    return pk.coordinate_keys(mics, x, y, size, stems=True)


def _read_labels(spec, iteration, pixel_size):
    particles = _read(spec.particles, iteration, pixel_size, False, with_classes=False)
    labels = read_labels(spec.path)
    if len(labels) != len(particles.classes):
        raise FormatError(spec.path, f'{len(labels)} labels for the {len(particles.classes)} '
                                     f'particles of {spec.particles.path}: a label file must '
                                     f'have one label per particle, in its order')
    if labels.min() + ZERO_BASED_OFFSET < 1:
        bad = int(np.sum(labels + ZERO_BASED_OFFSET < 1))
        raise FormatError(spec.path, f'{bad} labels below 0 (class numbers below 1 after '
                                     f'adding {ZERO_BASED_OFFSET} to 0-based labels)')
    stem = spec.path.stem
    name = f'{spec.path.parent.name}_{stem}' if stem in ('labels', 'kmeans_result') and \
        spec.path.parent.name else stem
    return _Run(name, 'labels', f'{spec.path} @ {particles.files}',
                labels + ZERO_BASED_OFFSET, particles.keys, star=particles.star,
                cs=particles.cs, cache=particles.cache)


# ---------------------------------------------------------------------- matching keys

def _shared(keys, tolerance):
    """Number of particles present in every run under these keys."""
    ids = pk.match_particles(keys, tolerance)
    common = np.unique(ids[0])
    for other in ids[1:]:
        common = np.intersect1d(common, other, assume_unique=False)
    return len(common)


def choose_key(runs, key='auto', tolerance=10.0):
    """Pick the matching key and its variant per run.

    Parameters
    ----------
    runs : list
        As returned by :func:`read_inputs`.
    key : {'auto', 'uid', 'image', 'coordinates'}
    tolerance : float
        Angstrom, for coordinates.

    Returns
    -------
    key : str
    keys : list of ParticleKeys
        One per run.
    note : str
        What was chosen and why (for the summary).

    Raises
    ------
    ReciprocalError
        If a run lacks the key asked for, or no key matches any particle across all runs
        (the message names the runs and their files, and why a key could not be built).
    FormatError
        If the key asked for cannot be built from a run's file (``'auto'`` tries the next
        key instead).
    """
    candidates = KEY_ORDER if key == 'auto' else (key,)
    for name in candidates:
        missing = [r for r in runs if name not in r.keys]
        if key != 'auto' and missing:
            raise ReciprocalError(f'{missing[0].name} ({missing[0].files}) cannot be matched by '
                                  f'{KEY_DESCRIPTIONS.get(name, name)}: its file lacks the '
                                  f'fields it needs')
    tried, best = [], None
    smallest = min(len(r.classes) for r in runs)
    for name in candidates:
        if any(name not in r.keys for r in runs):
            continue
        try:
            keys = _best_variants(runs, name, tolerance)
        except FormatError as exc:      # e.g. coordinates without a micrograph pixel size
            if key != 'auto':
                raise
            tried.append(f'{KEY_DESCRIPTIONS[name]}: not usable ({exc})')
            continue
        shared = _shared(keys, tolerance)
        tried.append(f'{KEY_DESCRIPTIONS[name]}: {shared}')
        if best is None or shared > best[2]:
            best = (name, keys, shared)
        if shared == smallest:
            break
    if best is None or best[2] == 0:
        files = '; '.join(f'{r.name}: {r.files}' for r in runs)
        raise ReciprocalError(f'no particle in common across all inputs ({files}); shared '
                              f'particles by key: {", ".join(tried) or "no key every input has"}')
    note = f'{KEY_DESCRIPTIONS[best[0]]} ({best[2]} particles in every run' + \
        (f'; tried {", ".join(tried)})' if len(tried) > 1 else ')')
    return best[0], best[1], note


def _best_variants(runs, name, tolerance):
    """Per run, the variant of a key (cryoSPARC's Y axis as :func:`y_from_bottom` says, or
    the opposite) that matches the first run with one variant (or the first run) best; a
    tie keeps the first variant."""
    counts = [len(runs[i].variants(name)) for i in range(len(runs))]
    ref = next((i for i, c in enumerate(counts) if c == 1), 0)
    keys = [runs[i].key(name) for i in range(len(runs))]
    for i, count in enumerate(counts):
        if i == ref or count == 1:
            continue
        scores = [_shared([keys[ref], runs[i].key(name, v)], tolerance) for v in range(count)]
        keys[i] = runs[i].key(name, int(np.argmax(scores)))
    return keys


# ---------------------------------------------------------------------- classifications

def classifications_from_inputs(specs, names=None, key='auto', iteration=None, pixel_size=None,
                                read_confidence=False, tolerance=10.0):
    """Classifications of any engine's runs, matched by a key every run has.

    Parameters
    ----------
    specs : list of str or InputSpec
        See :func:`parse_input`.
    names : list of str, optional
        Names in tables and plots (default: ``job085``, ``J30``, the file stem...).
    key : {'auto', 'uid', 'image', 'coordinates'}
    iteration : int, optional
        Iteration of RELION job folders (default: the last).
    pixel_size : float, optional
        Micrograph pixel size in Angstrom for coordinates, when the files lack it.
    read_confidence : bool
        Read ``rlnMaxValueProbDistribution`` / cryoSPARC's class posterior.
    tolerance : float

    Returns
    -------
    classifications : list of Classification
        ``source`` is the STAR file of RELION inputs (subsets copy its rows); cryoSPARC
        inputs have ``cs_source`` (see :func:`attach_star_sources` for their STAR subsets).
    note : str
        The matching key chosen (see :func:`choose_key`).
    """
    runs = read_inputs(specs, names, iteration, pixel_size, read_confidence)
    chosen, keys, note = choose_key(runs, key, tolerance)
    out = []
    for run, run_keys in zip(runs, keys):
        if run.cs is not None:
            run.cs.close()          # columns read for the keys are no longer needed
        out.append(Classification(run.name, run_keys, run.classes, confidence=run.confidence,
                                  class_ids=run.class_ids, kind=run.kind, source=run.star,
                                  job_dir=run.job_dir, cs_source=run.cs,
                                  class_maps=run.class_maps))
    _number_the_others(out)
    return out, note


def _number_the_others(classifications):
    """Runs without a RELION job number (``job085`` -> 85) get their position in the
    analysis, or the next number no other run has: the long-form tables name runs by number."""
    taken = {c.number for c in classifications if c.number is not None}
    for position, clf in enumerate(classifications, 1):
        if clf.number is None:
            number = position
            while number in taken:
                number += 1
            clf.number = number
            taken.add(number)


def attach_star_sources(classifications, out, folder=None):
    """Write every cryoSPARC input (without a STAR source) as a RELION 3.1 STAR file
    ``<name>.star`` in ``folder`` of ``out`` (a ResultFolder or a path; CTF, angles and origins
    in RELION's conventions, see :mod:`.cryosparc_relion`) and make it the source of its
    STAR subsets.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    out = as_result_folder(out)
    written = []
    for clf in classifications:
        particles = clf.cs_source
        if clf.source is not None or particles is None:
            continue
        table, optics = relion_particles(particles, particles.project_dir)
        table['rlnClassNumber'] = clf.classes
        relpath = f'{folder}/{clf.name}.star' if folder else f'{clf.name}.star'
        with out.writing(relpath) as tmp:
            write_particles_star(tmp, table, optics)
        clf.source = StarTable.open(out.path(relpath))
        clf.source.close()
        written.append(out.path(relpath))
    return written
