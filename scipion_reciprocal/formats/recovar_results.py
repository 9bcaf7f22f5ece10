"""Readers of RECOVAR 1.0.5 result folders (see ``docs/recovar-1.0.5.md`` for the layout).

Every RECOVAR command writes ``job.json`` (``status``: running / completed / failed) and
``run.log`` into its output folder; :func:`check_job` turns a failed or killed run into a
:class:`RecovarResultError` carrying the log tail. Per-particle arrays come back with one row per
row of the id map (``formats.cryodrgn.read_id_map``), NaN (or -1 for labels) where RECOVAR left a
particle out. Pickles written by RECOVAR's environment (numpy 2, JAX arrays) are read here with
numpy 1.26 and without JAX.
"""
import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import FormatError

__all__ = ['RecovarResultError', 'PipelineVolumes', 'Embedding', 'KMeansResult',
           'KernelVolumes', 'Trajectory', 'DensityResult', 'check_job', 'log_tail', 'read_job',
           'read_params', 'read_eigenvalues', 'available_zdims', 'read_embedding',
           'read_halfsets', 'pipeline_volumes', 'read_mean_fsc', 'read_kmeans', 'read_umap',
           'kernel_volumes', 'memory_error_line', 'read_trajectory', 'analysis_trajectories', 'read_density',
           'read_stable_states', 'read_subset_indices', 'read_outliers', 'load_pickle']

JOB_JSON = 'job.json'
RUN_LOG = 'run.log'
MODEL_DIR = 'model'
VOLUMES_DIR = 'output/volumes'
PLOTS_DIR = 'output/plots'
PARAMS_PKL = 'model/params.pkl'
PARTICLES_HALFSETS_PKL = 'model/particles_halfsets.pkl'
KMEANS_PKL = 'data/kmeans_result.pkl'
KMEANS_DIR = 'kmeans'
UMAP_PKL = 'plots/umap/umap_embedding.pkl'
PATH_JSON = 'path.json'
DENSITY_KNEE_PKL = 'data/deconv_density_knee.pkl'
DENSITY_ALL_DIR = 'data/all_densities'
LCURVE_PNG = 'plots/Lcurve.png'
STABLE_STATES_TXT = 'stable_state_all_coords.txt'
SUBSET_PKL = 'indices.pkl'
OUTLIERS_DIR = 'data/combined_results'

LOW_MEMORY_HINT = ('RECOVAR may have run out of memory: try --low-memory-option or '
                   '--very-low-memory-option, --lazy, a smaller --gpu-budget-gb, fewer zdims, '
                   'or --downsample to a smaller box')
# "can't start new thread": under a memory limit (ulimit -v, cgroups) thread stacks are the
# first allocations to fail in RECOVAR's data loaders.
_MEMORY_WORDS = re.compile(r'out of memory|RESOURCE_EXHAUSTED|MemoryError|Killed|'
                           r"Cannot allocate memory|std::bad_alloc|can't start new thread",
                           re.IGNORECASE)


class RecovarResultError(FormatError):
    """A RECOVAR output that is missing, failed or unreadable."""


# ------------------------------------------------------------------ jobs and logs

def log_tail(job_dir, n_lines=30):
    """The last ``n_lines`` of the job's ``run.log`` ('' when there is none)."""
    path = Path(job_dir) / RUN_LOG
    if not path.is_file():
        return ''
    with open(path, 'rb') as fh:
        fh.seek(0, 2)
        fh.seek(max(0, fh.tell() - 200 * n_lines))
        lines = fh.read().decode('utf-8', 'replace').splitlines()
    return '\n'.join(lines[-n_lines:])


def memory_error_line(text):
    """The last line of ``text`` that reports running out of memory, or None."""
    lines = [line for line in text.splitlines() if _MEMORY_WORDS.search(line)]
    return lines[-1].strip() if lines else None


_EXCEPTION_LINE = re.compile(r'^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception)(?::.*)?$')


def exception_line(text):
    """The last line of ``text`` that ends a Python traceback (``IndexError: ...``), or None."""
    lines = [line.strip() for line in text.splitlines() if _EXCEPTION_LINE.match(line)]
    return lines[-1] if lines else None


def read_job(job_dir):
    """``job.json`` of a RECOVAR output folder as a dict.

    Raises
    ------
    RecovarResultError
        If the folder or its ``job.json`` is missing or unreadable.
    """
    path = Path(job_dir) / JOB_JSON
    if not path.is_file():
        raise RecovarResultError(path, 'not found: the folder is not a RECOVAR output, or the '
                                       'command never started')
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise RecovarResultError(path, f'unreadable: {exc}') from None


def check_job(job_dir, command=None, log_lines=30):
    """Check that a RECOVAR command finished; return its ``job.json``.

    Parameters
    ----------
    job_dir : str or os.PathLike
        The command's output folder.
    command : str, optional
        Expected command name (``'pipeline'``, ``'analyze'``, ...).
    log_lines : int
        Lines of ``run.log`` quoted in the error.

    Raises
    ------
    RecovarResultError
        If the job is not marked completed (failed, or killed while running, e.g. out of
        memory); the message ends with the log tail and, when the log suggests it, the
        low-memory options to try.
    """
    job = read_job(job_dir)
    if command is not None and job.get('command') != command:
        raise RecovarResultError(Path(job_dir) / JOB_JSON,
                                 f'is a {job.get("command")!r} job, expected {command!r}')
    status = job.get('status')
    if status != 'completed':
        tail = log_tail(job_dir, log_lines)
        state = 'failed' if status == 'failed' else f'did not finish (status {status!r}; killed?)'
        hint = ''
        if status != 'failed' or _MEMORY_WORDS.search(tail):
            hint = f'\n{LOW_MEMORY_HINT}'
        raise RecovarResultError(job_dir, f'RECOVAR {job.get("command", "job")} {state}.'
                                          f'{hint}\nlast lines of {RUN_LOG}:\n{tail}')
    return job


# ------------------------------------------------------------------ pickles

def _array_from_jax(fun, args, array_state, aval_state=None):
    array = fun(*args)
    array.__setstate__(array_state)
    return array


class _Opaque:
    """Stands for an object of a class that cannot be imported here (kept, not used)."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module.startswith('jax') and name == '_reconstruct_array':
            return _array_from_jax
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return _Opaque


def load_pickle(path):
    """Unpickle a RECOVAR file: JAX arrays become numpy arrays, unknown classes placeholders.

    Raises
    ------
    RecovarResultError
        If the file is missing or not a readable pickle.
    """
    path = Path(path)
    if not path.is_file():
        raise RecovarResultError(path, 'not found')
    try:
        with open(path, 'rb') as fh:
            return _Unpickler(fh).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise RecovarResultError(path, f'unreadable pickle: {exc}') from None


def _require(path, what):
    path = Path(path)
    if not path.exists():
        raise RecovarResultError(path, f'{what} not found')
    return path


def _rows(array, n_rows, fill=np.nan):
    """Pad (or check) RECOVAR's per-particle array to ``n_rows`` rows."""
    array = np.asarray(array)
    if n_rows is None or len(array) == n_rows:
        return array
    if len(array) > n_rows:
        raise RecovarResultError(f'RECOVAR result has {len(array)} rows but the id map has '
                                 f'{n_rows}: the result belongs to another particle set')
    out = np.full((n_rows,) + array.shape[1:], fill,
                  dtype=np.result_type(array.dtype, np.asarray(fill).dtype))
    out[:len(array)] = array
    return out


# ------------------------------------------------------------------ pipeline

def read_params(pipeline_dir):
    """``model/params.pkl`` (eigenvalues ``s``, noise, ``input_args`` ...) as a dict."""
    return load_pickle(_require(Path(pipeline_dir) / PARAMS_PKL, 'pipeline parameters'))


def read_eigenvalues(pipeline_dir):
    """Eigenvalues of the covariance, largest first: ``(n_pcs,)`` float64."""
    params = read_params(pipeline_dir)
    if 's' not in params:
        raise RecovarResultError(Path(pipeline_dir) / PARAMS_PKL, 'has no eigenvalues (key s)')
    return np.asarray(params['s'], dtype=np.float64)


def available_zdims(pipeline_dir):
    """Latent dimensions the pipeline computed (sorted), from ``model/zdim_<k>/``."""
    model = _require(Path(pipeline_dir) / MODEL_DIR, 'pipeline model folder')
    return sorted(int(p.name[5:]) for p in model.glob('zdim_*') if p.name[5:].isdigit())


@dataclass
class Embedding:
    """Per-particle latent space of one zdim.

    Attributes
    ----------
    zdim : int
    regularized : bool
        RECOVAR's ``latent_coords`` (True; what analyze and k-means use) or
        ``latent_coords_noreg`` (False; what the density estimation uses).
    coords : numpy.ndarray
        ``(N, zdim)`` coordinates.
    precision : numpy.ndarray
        ``(N, zdim, zdim)`` per-particle posterior precision (``cov_zs`` in RECOVAR's code).
    contrasts : numpy.ndarray
        ``(N,)`` estimated per-particle contrast (1 when not corrected).
    """

    zdim: int
    regularized: bool
    coords: np.ndarray
    precision: np.ndarray
    contrasts: np.ndarray


def read_embedding(pipeline_dir, zdim, regularized=True, n_rows=None):
    """Latent coordinates, precisions and contrasts of one zdim.

    Parameters
    ----------
    pipeline_dir : str or os.PathLike
    zdim : int
    regularized : bool
        ``latent_coords`` (True) or ``latent_coords_noreg`` (False).
    n_rows : int, optional
        Rows of the id map; arrays are padded with NaN to it.

    Returns
    -------
    Embedding
    """
    folder = Path(pipeline_dir) / MODEL_DIR / f'zdim_{int(zdim)}'
    if not folder.is_dir():
        raise RecovarResultError(folder, f'zdim {zdim} not computed (available: '
                                         f'{available_zdims(pipeline_dir)})')
    suffix = '' if regularized else '_noreg'
    arrays = [np.load(_require(folder / f'{name}{suffix}.npy', f'{name}{suffix}'))
              for name in ('latent_coords', 'latent_precision', 'contrasts')]
    coords, precision, contrasts = (_rows(a, n_rows) for a in arrays)
    return Embedding(int(zdim), bool(regularized), coords, precision, contrasts)


def read_halfsets(pipeline_dir, n_rows=None):
    """Half set (1 or 2, 0 where unused) of every particle row."""
    halves = load_pickle(_require(Path(pipeline_dir) / PARTICLES_HALFSETS_PKL, 'half sets'))
    size = max(int(np.max(h)) + 1 for h in halves if len(h)) if n_rows is None else n_rows
    out = np.zeros(size, dtype=np.int64)
    for k, rows in enumerate(halves[:2]):
        out[np.asarray(rows, dtype=np.int64)] = k + 1
    return out


@dataclass
class PipelineVolumes:
    """Map files of a pipeline run (paths; ``None`` where not written)."""

    mean: Path
    half1: Path
    half2: Path
    mean_filtered: Path
    mask: Path
    dilated_mask: Path = None
    focus_mask: Path = None
    variances: dict = field(default_factory=dict)
    eigenvolumes: list = field(default_factory=list)


def pipeline_volumes(pipeline_dir):
    """Volume files of a pipeline run: mean, half maps, masks, variances, eigenvolumes.

    ``variances`` maps the number of eigenvectors used to the file; ``eigenvolumes`` are in
    eigenvalue order. Raises :class:`RecovarResultError` if the mean or a half map is missing.
    """
    folder = Path(pipeline_dir) / VOLUMES_DIR
    optional = {name: (folder / f'{name}.mrc') for name in ('dilated_mask', 'focus_mask')}
    variances = {int(p.stem[8:]): p for p in folder.glob('variance*.mrc') if p.stem[8:].isdigit()}
    eigen = sorted(folder.glob('eigen_pos*.mrc'), key=lambda p: int(p.stem[9:]))
    return PipelineVolumes(
        mean=_require(folder / 'mean.mrc', 'mean volume'),
        half1=_require(folder / 'mean_half1_unfil.mrc', 'half map 1'),
        half2=_require(folder / 'mean_half2_unfil.mrc', 'half map 2'),
        mean_filtered=_require(folder / 'mean_filt.mrc', 'filtered mean'),
        mask=_require(folder / 'mask.mrc', 'mask'),
        dilated_mask=optional['dilated_mask'] if optional['dilated_mask'].exists() else None,
        focus_mask=optional['focus_mask'] if optional['focus_mask'].exists() else None,
        variances=dict(sorted(variances.items())), eigenvolumes=eigen)


def read_mean_fsc(pipeline_dir):
    """FSC of the mean's unfiltered half maps, without and with RECOVAR's solvent mask.

    Returns
    -------
    dict
        ``frequency`` (1/Å, shells 1 .. box/2), ``unmasked``, ``masked``, ``voxel_size``.
    """
    from ..core.mapsim.similarity import fsc_curve
    from .mrc import read_map
    volumes = pipeline_volumes(pipeline_dir)
    half1, voxel_size = read_map(volumes.half1)
    half2, _ = read_map(volumes.half2)
    mask, _ = read_map(volumes.mask)
    frequency, unmasked = fsc_curve(half1, half2, voxel_size)
    _, masked = fsc_curve(half1, half2, voxel_size, weights=mask.astype(np.float32))
    return {'frequency': frequency, 'unmasked': unmasked, 'masked': masked,
            'voxel_size': voxel_size}


# ------------------------------------------------------------------ analyze

@dataclass
class KMeansResult:
    """k-means of ``analyze``.

    Attributes
    ----------
    centers : numpy.ndarray
        ``(K, zdim)`` centres in the (regularised) latent space.
    labels : numpy.ndarray
        ``(N,)`` int cluster of every row, -1 where RECOVAR left the particle out.
    """

    centers: np.ndarray
    labels: np.ndarray

    @property
    def n_clusters(self):
        """Number of clusters."""
        return len(self.centers)

    def members(self, clusters, invert=False):
        """Rows in the given clusters (or, with ``invert``, in none of them; -1 rows never)."""
        inside = np.isin(self.labels, np.atleast_1d(clusters))
        rows = ~inside & (self.labels >= 0) if invert else inside
        return np.flatnonzero(rows)


def read_kmeans(analysis_dir, n_rows=None):
    """k-means centres and labels of an ``analyze`` folder (``data/kmeans_result.pkl``)."""
    result = load_pickle(_require(Path(analysis_dir) / KMEANS_PKL, 'k-means result'))
    labels = np.asarray(result['labels'], dtype=np.float64)
    labels = _rows(labels, n_rows)
    labels = np.where(np.isfinite(labels), labels, -1).astype(np.int64)
    return KMeansResult(np.atleast_2d(np.asarray(result['centers'], dtype=np.float64)), labels)


def read_umap(analysis_dir, n_rows=None):
    """UMAP embedding ``(N, 2)`` of an ``analyze`` folder, or ``None`` when skipped."""
    path = Path(analysis_dir) / UMAP_PKL
    if not path.is_file():
        return None
    return _rows(np.asarray(load_pickle(path), dtype=np.float64), n_rows)


@dataclass
class KernelVolumes:
    """Kernel-regression volumes (k-means centres, states, trajectory points) of one folder.

    Attributes
    ----------
    volumes, half1, half2, unfiltered : list of pathlib.Path
        ``<prefix>NNN.mrc`` (locally filtered), its unfiltered half maps and the unfiltered
        average of the halves, in index order.
    latent_points : numpy.ndarray
        ``(n, zdim)`` latent point of each volume.
    """

    volumes: list
    half1: list
    half2: list
    unfiltered: list
    latent_points: np.ndarray


def kernel_volumes(folder, prefix):
    """Volumes written by kernel regression into ``folder`` (``prefix``: center or state).

    Returns a :class:`KernelVolumes` with empty lists when none were computed (e.g. analyze with
    ``--skip-centers``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise RecovarResultError(folder, 'volume folder not found')
    pattern = re.compile(rf'^{re.escape(prefix)}(\d+)\.mrc$')
    indices = sorted(int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name)))
    stems = [f'{prefix}{i:03d}' for i in indices]
    points = []
    for stem in stems:
        coords = folder / 'diagnostics' / stem / 'latent_coords.txt'
        points.append(np.atleast_1d(np.loadtxt(coords)) if coords.is_file() else None)
    latent = (np.vstack(points) if points and all(p is not None for p in points)
              else np.empty((len(stems), 0)))
    return KernelVolumes(volumes=[folder / f'{s}.mrc' for s in stems],
                         half1=[folder / f'{s}_half1_unfil.mrc' for s in stems],
                         half2=[folder / f'{s}_half2_unfil.mrc' for s in stems],
                         unfiltered=[folder / f'{s}_unfil.mrc' for s in stems],
                         latent_points=latent)


@dataclass
class Trajectory:
    """A latent-space path (``analyze`` trajNNN/ or ``compute_trajectory``).

    Attributes
    ----------
    path : numpy.ndarray
        ``(M, d)`` the full path.
    density : numpy.ndarray
        ``(M,)`` latent density along it (NaN when RECOVAR did not compute it).
    points : numpy.ndarray
        ``(n, d)`` the points where volumes were computed.
    point_density : numpy.ndarray
        ``(n,)`` density at those points.
    volumes : KernelVolumes
        The volumes along the path (``state`` prefix).
    """

    path: np.ndarray
    density: np.ndarray
    points: np.ndarray
    point_density: np.ndarray
    volumes: KernelVolumes


def read_trajectory(folder):
    """A trajectory folder: ``path.json`` and its ``stateNNN.mrc`` volumes.

    For zdim 1 RECOVAR writes no ``path.json``; the path is then the volumes' latent points.
    """
    folder = Path(folder)
    if (folder / 'path0').is_dir() and not (folder / PATH_JSON).is_file():
        folder = folder / 'path0'
    volumes = kernel_volumes(folder, 'state')
    path_file = folder / PATH_JSON
    if path_file.is_file():
        with open(path_file) as fh:
            data = json.load(fh)
        path = np.atleast_2d(np.asarray(data['path'], dtype=np.float64))
        points = np.atleast_2d(np.asarray(data['path_subsampled'], dtype=np.float64))
        density = np.asarray(data['density'], dtype=np.float64).ravel()
        point_density = np.asarray(data['density_subsampled'], dtype=np.float64).ravel()
    else:
        path = points = volumes.latent_points
        density = point_density = np.full(len(points), np.nan)
    return Trajectory(path, density, points, point_density, volumes)


def analysis_trajectories(analysis_dir):
    """Trajectories of an ``analyze`` folder (``traj000``, ``traj001`` ...), in order."""
    folders = sorted(p for p in Path(analysis_dir).glob('traj[0-9][0-9][0-9]') if p.is_dir())
    return [read_trajectory(p) for p in folders]


# ------------------------------------------------------------------ density, states, subsets

@dataclass
class DensityResult:
    """``estimate_conformational_density`` output.

    Attributes
    ----------
    alphas : numpy.ndarray
        Regularisation parameters, in RECOVAR's order (largest first).
    density_files : list of pathlib.Path
        ``deconv_density_<i>.pkl`` for ``alphas[i]``.
    knee_index : int
        Index of the L-curve knee (RECOVAR's choice).
    knee_alpha : float
    knee_density : numpy.ndarray
        The density at the knee, on a ``(num_points,) * pca_dim`` grid.
    bounds : numpy.ndarray
        ``(pca_dim, 2)`` latent-space bounds of the grid.
    lcurve_plot : pathlib.Path or None
        RECOVAR's L-curve figure (the costs themselves are not written to a file).
    """

    alphas: np.ndarray
    density_files: list
    knee_index: int
    knee_alpha: float
    knee_density: np.ndarray
    bounds: np.ndarray
    lcurve_plot: Path = None

    def density(self, index):
        """``(density, bounds)`` for ``alphas[index]``."""
        data = load_pickle(self.density_files[index])
        return np.asarray(data['density']), np.asarray(data['latent_space_bounds'])


def read_density(density_dir):
    """Densities for every alpha, the knee choice and the L-curve figure of a density folder."""
    folder = Path(density_dir)
    knee = load_pickle(_require(folder / DENSITY_KNEE_PKL, 'knee density'))
    files = sorted((folder / DENSITY_ALL_DIR).glob('deconv_density_*.pkl'),
                   key=lambda p: int(p.stem.rsplit('_', 1)[1]))
    if not files:
        raise RecovarResultError(folder / DENSITY_ALL_DIR, 'no deconv_density_<i>.pkl files')
    alphas = np.array([float(load_pickle(p)['alpha']) for p in files])
    knee_alpha = float(knee['alpha'])
    knee_index = int(np.argmin(np.abs(np.log(alphas) - np.log(knee_alpha))))
    lcurve = folder / LCURVE_PNG
    return DensityResult(alphas=alphas, density_files=files, knee_index=knee_index,
                         knee_alpha=knee_alpha, knee_density=np.asarray(knee['density']),
                         bounds=np.asarray(knee['latent_space_bounds']),
                         lcurve_plot=lcurve if lcurve.is_file() else None)


def read_stable_states(folder):
    """``(n_states, pca_dim)`` latent coordinates found by ``estimate_stable_states``."""
    path = _require(Path(folder) / STABLE_STATES_TXT, 'stable states')
    return np.atleast_2d(np.loadtxt(path))


def read_subset_indices(folder_or_file, n_rows=None):
    """Rows chosen by ``extract_image_subset`` / ``extract_image_subset_from_kmeans``.

    Raises :class:`RecovarResultError` if a row is outside ``0 .. n_rows - 1``.
    """
    path = Path(folder_or_file)
    path = path / SUBSET_PKL if path.is_dir() else path
    rows = np.asarray(load_pickle(_require(path, 'subset indices')), dtype=np.int64).ravel()
    if n_rows is not None and rows.size and (rows.min() < 0 or rows.max() >= n_rows):
        raise RecovarResultError(path, f'row {int(rows.max())} outside the {n_rows} particles '
                                       f'of the id map')
    return np.sort(rows)


def read_outliers(folder, zdim, n_rows=None):
    """Rows flagged by ``outlier_detection`` (combined methods) for the embedding ``zdim``.

    Returns
    -------
    outliers, inliers : numpy.ndarray
        Sorted int64 rows of ``data/combined_results/combined_image_{outliers,inliers}_<zdim>.pkl``.
    """
    folder = Path(folder) / OUTLIERS_DIR
    return tuple(read_subset_indices(folder / f'combined_image_{kind}_{int(zdim)}.pkl', n_rows)
                 for kind in ('outliers', 'inliers'))
