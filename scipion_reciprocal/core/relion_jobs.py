"""Find RELION classification jobs and their files.

A RELION project holds one folder per job type (``Class3D``, ``Class2D``,
``InitialModel``, ...) and one folder per job inside it (``Class3D/job085``). A
classification job writes, for every iteration, ``run_itNNN_data.star`` (particles with
their class), ``run_itNNN_model.star`` (class maps, distribution, resolution) and
``run_itNNN_optimiser.star`` (convergence figures); continued runs write
``run_ctNNN_itMMM_*`` files, which count by their iteration ``MMM``. Gzipped data files
(``run_itNNN_data.star.gz``, left by archiving) count as iterations too: the analysis refuses
them by name rather than fall back silently to an older iteration.
"""

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..formats.errors import FormatError
from ..formats.star import read_star

__all__ = ['RelionJobError', 'parse_job_list', 'resolve_jobs', 'find_iteration_file',
           'iteration_files', 'read_job_history', 'job_kind', 'class_maps', 'job_number']

_ITERATION_FILE = re.compile(r'^(?P<root>.+?)(?:_ct(?P<ct>\d+))?_it(?P<it>\d+)_data\.star'
                             r'(?P<gz>\.gz)?$')
_JOB_TOKEN = re.compile(r'^(?:(?P<folder>.*?)/)?(?:job)?(?P<number>\d+)/?$')
_TYPE_KIND = {'class3d': '3D', 'initialmodel': '3D', 'refine3d': '3D', 'multibody': '3D',
              'class2d': '2D'}
HISTORY_QUANTITIES = ('changes_optimal_classes', 'changes_optimal_orientations',
                      'changes_optimal_offsets', 'class_distribution', 'estimated_resolution')


class RelionJobError(FormatError):
    """A RELION job folder that is missing or lacks the files asked for."""


def job_number(name):
    """The number in a job name (``'Class3D/job085'`` -> 85), or None."""
    m = re.search(r'job0*(\d+)', str(name))
    return int(m.group(1)) if m else None


def parse_job_list(text):
    """Split a list of RELION jobs written by a user.

    Parameters
    ----------
    text : str or iterable of str
        ``'85,86,87'``, ``'85 86 87'``, ``'job085'``, ``'Class3D/job085, Class2D/job013'``.

    Returns
    -------
    list of str
        ``'job085'`` for bare numbers, ``'Class3D/job085'`` for job paths; numbers are
        zero-padded to three digits.

    Raises
    ------
    ValueError
        If a token is not a job number or a job path, or the list is empty.
    """
    if not isinstance(text, str):
        text = ' '.join(str(t) for t in text)
    tokens = [t for t in re.split(r'[,\s;]+', text.strip()) if t]
    if not tokens:
        raise ValueError('no job given (write job numbers like "85,86" or paths like '
                         '"Class3D/job085")')
    jobs = []
    for token in tokens:
        m = _JOB_TOKEN.match(token.replace('\\', '/'))
        if m is None:
            raise ValueError(f'{token!r} is not a job number (85, job085) or a job path '
                             f'(Class3D/job085)')
        name = f'job{int(m.group("number")):03d}'
        folder = (m.group('folder') or '').strip('/')
        jobs.append(f'{folder}/{name}' if folder else name)
    return jobs


def resolve_jobs(jobs, project_dir=None, jobs_dir=None):
    """Turn job names into existing job folders.

    Parameters
    ----------
    jobs : str or list of str
        As accepted by :func:`parse_job_list`.
    project_dir : path, optional
        RELION project folder: bare numbers are looked up under every job-type folder
        (``Class3D``, ``Class2D``, ``InitialModel``, ...) and must match exactly one.
    jobs_dir : path, optional
        A job-type folder (``.../Class3D``): bare numbers are taken from it.

    Returns
    -------
    list of pathlib.Path

    Raises
    ------
    RelionJobError
        If a job folder does not exist or a bare number matches several folders.
    """
    names = parse_job_list(jobs)
    project_dir = Path(project_dir) if project_dir is not None else None
    jobs_dir = Path(jobs_dir) if jobs_dir is not None else None
    if project_dir is None and jobs_dir is None:
        project_dir = Path('.')
    base = project_dir if project_dir is not None else jobs_dir.parent
    for folder in (project_dir, jobs_dir):
        if folder is not None and not folder.is_dir():
            raise RelionJobError(folder, 'folder not found')
    found = []
    for name in names:
        if '/' in name:
            path = base / name
            if not path.is_dir():
                raise RelionJobError(path, f'job {name}: folder not found')
            found.append(path)
            continue
        if jobs_dir is not None:
            path = jobs_dir / name
            if not path.is_dir():
                raise RelionJobError(path, f'job {name}: folder not found')
            found.append(path)
            continue
        matches = sorted(p for p in project_dir.glob(f'*/{name}') if p.is_dir()
                         and not p.is_symlink())
        if not matches:
            raise RelionJobError(project_dir, f'job {name}: no folder */{name} in the project')
        if len(matches) > 1:
            listed = ', '.join(str(p.relative_to(project_dir)) for p in matches)
            raise RelionJobError(project_dir, f'job {name} is ambiguous ({listed}): give the '
                                              f'job path, e.g. {matches[0].relative_to(project_dir)}')
        found.append(matches[0])
    return found


def iteration_files(job_dir):
    """Every ``*_itNNN_data.star`` (or ``.star.gz``) of a job.

    Returns
    -------
    pandas.DataFrame
        Columns ``iteration``, ``ct`` (continuation number, 0 for first runs), ``path``,
        ``gzipped``, sorted by iteration, then ct, a plain file after a gzipped one.
    """
    job_dir = Path(job_dir)
    rows = []
    for path in job_dir.glob('*_data.star*'):
        m = _ITERATION_FILE.match(path.name)
        if m:
            rows.append((int(m.group('it')), int(m.group('ct') or 0), path, bool(m.group('gz'))))
    frame = pd.DataFrame(rows, columns=['iteration', 'ct', 'path', 'gzipped'])
    frame['plain'] = ~frame['gzipped'].astype(bool)
    frame = frame.sort_values(['iteration', 'ct', 'plain'], ignore_index=True)
    return frame.drop(columns='plain')


def find_iteration_file(job_dir, iteration=None):
    """The particles file of a classification job's last (or a given) iteration.

    Parameters
    ----------
    job_dir : path
    iteration : int, optional
        Take this iteration (the latest continuation when several runs wrote it).

    Returns
    -------
    pathlib.Path
        ``run_itNNN_data.star`` or ``run_ctNNN_itMMM_data.star``.

    Raises
    ------
    RelionJobError
        If the folder is missing, has no iteration files, lacks the iteration asked for
        (the message lists those available), or that iteration's file is gzipped only.
    """
    job_dir = Path(job_dir)
    name = _job_label(job_dir)
    if not job_dir.is_dir():
        raise RelionJobError(job_dir, f'job {name}: folder not found')
    files = iteration_files(job_dir)
    if files.empty:
        raise RelionJobError(job_dir, f'job {name}: no iteration files (run_itNNN_data.star); '
                                      f'has the job run?')
    if iteration is not None:
        files = files[files['iteration'] == int(iteration)]
        if files.empty:
            available = sorted(set(iteration_files(job_dir)['iteration']))
            raise RelionJobError(job_dir, f'job {name}: no iteration {int(iteration)} '
                                          f'(available: {_ranges(available)})')
    last = files.iloc[-1]
    if last['gzipped']:
        earlier = files[~files['gzipped'].astype(bool)] if iteration is None else files.iloc[:0]
        hint = (f', or choose iteration {int(earlier["iteration"].iloc[-1])}' if len(earlier)
                else '')
        raise RelionJobError(last['path'], f'job {name}: iteration {int(last["iteration"])} '
                                           f'is gzipped: gunzip it to read it{hint}')
    return last['path']


def _job_label(job_dir):
    job_dir = Path(job_dir)
    return f'{job_dir.parent.name}/{job_dir.name}' if job_dir.parent.name else job_dir.name


def _ranges(numbers):
    """'1-25, 30' for [1, 2, ..., 25, 30]."""
    parts, start, prev = [], None, None
    for n in numbers:
        if start is None:
            start = prev = n
        elif n == prev + 1:
            prev = n
        else:
            parts.append(f'{start}-{prev}' if prev > start else f'{start}')
            start = prev = n
    if start is not None:
        parts.append(f'{start}-{prev}' if prev > start else f'{start}')
    return ', '.join(parts)


def _companion(data_file, kind):
    """``run_it025_model.star`` next to ``run_it025_data.star`` (or ``.star.gz``)."""
    data_file = Path(data_file)
    stem = data_file.name[:data_file.name.rindex('_data.star')]
    return data_file.with_name(f'{stem}_{kind}.star')


def _read_block(path, block):
    return read_star(path, blocks=[block]).blocks[block]


def read_job_history(job_dir):
    """Per-iteration convergence figures of a classification job.

    Parameters
    ----------
    job_dir : path

    Returns
    -------
    pandas.DataFrame
        Long format, one row per (iteration, class, quantity): columns ``iteration``,
        ``class`` (0 for figures of the whole job), ``quantity``, ``value``. Quantities:
        ``changes_optimal_classes``, ``changes_optimal_orientations`` (degrees),
        ``changes_optimal_offsets`` (Angstrom or pixels, as RELION writes them) from
        ``run_itNNN_optimiser.star``; ``class_distribution`` (fraction) and
        ``estimated_resolution`` (Angstrom) per class from ``run_itNNN_model.star``.
        Iterations whose files are missing contribute no rows; continued runs count by
        iteration (the latest continuation wins).

    Raises
    ------
    RelionJobError
        If the job has no iteration files.
    """
    job_dir = Path(job_dir)
    files = iteration_files(job_dir)
    if files.empty:
        raise RelionJobError(job_dir, f'job {_job_label(job_dir)}: no iteration files '
                                      f'(run_itNNN_data.star)')
    files = files.drop_duplicates('iteration', keep='last')
    frames = []
    general = {'rlnChangesOptimalClasses': 'changes_optimal_classes',
               'rlnChangesOptimalOrientations': 'changes_optimal_orientations',
               'rlnChangesOptimalOffsets': 'changes_optimal_offsets'}
    per_class = {'rlnClassDistribution': 'class_distribution',
                 'rlnEstimatedResolution': 'estimated_resolution'}
    for iteration, path in zip(files['iteration'], files['path']):
        optimiser = _companion(path, 'optimiser')
        if optimiser.exists():
            values = _read_block(optimiser, 'optimiser_general')
            rows = [(iteration, 0, q, float(values[label])) for label, q in general.items()
                    if label in values]
            frames.append(pd.DataFrame(rows, columns=['iteration', 'class', 'quantity', 'value']))
        model = _companion(path, 'model')
        if model.exists():
            classes = _read_block(model, 'model_classes')
            for label, quantity in per_class.items():
                if label in classes.columns:
                    frames.append(pd.DataFrame({
                        'iteration': iteration, 'class': range(1, len(classes) + 1),
                        'quantity': quantity, 'value': classes[label].astype(float).to_numpy()}))
    if not frames:
        return pd.DataFrame(columns=['iteration', 'class', 'quantity', 'value'])
    history = pd.concat(frames, ignore_index=True)
    history['iteration'] = history['iteration'].astype(int)
    history['class'] = history['class'].astype(int)
    return history.sort_values(['quantity', 'class', 'iteration'], ignore_index=True)


def job_kind(job_dir, iteration=None):
    """``'3D'`` or ``'2D'``: from ``rlnReferenceDimensionality`` of the model file when
    there is one, else from the job-type folder name (Class2D, Class3D, InitialModel),
    else from the class map names (``.mrcs`` stacks are 2D).

    Raises
    ------
    RelionJobError
        If none of these tells.
    """
    job_dir = Path(job_dir)
    try:
        model = _companion(find_iteration_file(job_dir, iteration), 'model')
    except RelionJobError:
        model = None
    if model is not None and model.exists():
        general = _read_block(model, 'model_general')
        dim = general.get('rlnReferenceDimensionality')
        if dim in (2, 3):
            return f'{dim}D'
    kind = _TYPE_KIND.get(job_dir.parent.name.lower())
    if kind:
        return kind
    if model is not None and model.exists():
        refs = _read_block(model, 'model_classes').get('rlnReferenceImage')
        if refs is not None and len(refs):
            return '2D' if str(refs.iloc[0]).endswith('.mrcs') or '@' in str(refs.iloc[0]) else '3D'
    raise RelionJobError(job_dir, f'job {_job_label(job_dir)}: cannot tell whether it is a 2D '
                                  f'or 3D classification')


def class_maps(job_dir, iteration=None, project_dir=None):
    """The classes of a job's iteration as listed in its model file.

    Parameters
    ----------
    job_dir : path
    iteration : int, optional
        Default: the last iteration.
    project_dir : path, optional
        Folder that ``rlnReferenceImage`` paths are relative to; default: the job's
        grandparent (the RELION project).

    Returns
    -------
    pandas.DataFrame
        One row per class, in class order: ``class`` (1-based), ``reference`` (as
        written), ``path`` (pathlib.Path of the map or stack), ``index`` (1-based image
        in a 2D stack, 0 for a 3D map), ``exists``, ``distribution``, ``resolution``.

    Raises
    ------
    RelionJobError
        If the job has no iteration files or no model file for that iteration.
    """
    job_dir = Path(job_dir)
    data_file = find_iteration_file(job_dir, iteration)
    model = _companion(data_file, 'model')
    if not model.exists():
        raise RelionJobError(model, f'job {_job_label(job_dir)}: model file not found')
    classes = _read_block(model, 'model_classes')
    root = Path(project_dir) if project_dir is not None else job_dir.parent.parent
    refs = classes['rlnReferenceImage'].astype(str).to_numpy() if 'rlnReferenceImage' in \
        classes.columns else [''] * len(classes)
    index, paths = [], []
    for ref in refs:
        number, at, name = ref.partition('@')
        index.append(int(number) if at else 0)
        paths.append(root / (name if at else ref))
    frame = pd.DataFrame({
        'class': range(1, len(classes) + 1),
        'reference': refs,
        'path': paths,
        'index': index,
        'exists': [p.is_file() for p in paths],
        'distribution': _float_column(classes, 'rlnClassDistribution'),
        'resolution': _float_column(classes, 'rlnEstimatedResolution'),
    })
    return frame


def _float_column(frame, label):
    if label in frame.columns:
        return frame[label].astype(float).to_numpy()
    return np.full(len(frame), np.nan)
