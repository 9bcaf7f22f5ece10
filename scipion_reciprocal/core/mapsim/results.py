"""The result of map clustering, its tables, and the files written from it.

Files written by :func:`write_results` (names are the module constants):

- ``similarity_matrix.csv``: square, map names as header and index (the measure used).
- ``correlation_matrix.csv``: masked correlation (aligned), same layout.
- ``fsc_resolution.csv``: resolution (Å) at the FSC threshold of each pair (FSC only).
- ``cluster_results.csv``: ``name,cluster``.
- ``transforms.csv``: per map, rotation (matrix and ZYZ Euler angles), shift (Å), mirror, score.
- ``k_selection.csv``: silhouette, cut height, merge-height gap and acceleration per candidate
  k, the chosen k flagged.
- ``mds.csv``: ``name,x,y,cluster``.
- ``linkage.csv``: scipy linkage matrix (``left,right,height,size``).
- ``grid.csv``: each map's original box and voxel size and whether it was resampled.
- ``central_slices.npz``: central XY/XZ/YZ slices of the aligned maps and the averages.
- ``aligned/<name>.mrc``, ``cluster_averages/cluster_<k>.mrc``.
- ``chimerax_clusters.cxc``: opens each cluster's aligned members, one model group per cluster.
- ``summary.txt``.
"""
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .align import apply_transform, euler_zyz, split_transform
from .inputs import safe_filename

SIMILARITY_CSV = 'similarity_matrix.csv'
CORRELATION_CSV = 'correlation_matrix.csv'
FSC_RESOLUTION_CSV = 'fsc_resolution.csv'
CLUSTERS_CSV = 'cluster_results.csv'
TRANSFORMS_CSV = 'transforms.csv'
K_SELECTION_CSV = 'k_selection.csv'
MDS_CSV = 'mds.csv'
LINKAGE_CSV = 'linkage.csv'
GRID_CSV = 'grid.csv'
SLICES_NPZ = 'central_slices.npz'
SUMMARY_TXT = 'summary.txt'
CHIMERAX_CXC = 'chimerax_clusters.cxc'
ALIGNED_DIR = 'aligned'
AVERAGES_DIR = 'cluster_averages'

#: Colours of clusters 1, 2, ... (matplotlib's tab10), shared by the plots and ChimeraX.
CLUSTER_COLOURS = ('#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2',
                   '#7f7f7f', '#bcbd22', '#17becf')


def cluster_colour(label):
    """Colour (hex) of cluster ``label`` (1-based)."""
    return CLUSTER_COLOURS[(int(label) - 1) % len(CLUSTER_COLOURS)]


def average_filename(label):
    """File name of a cluster's average map."""
    return f'cluster_{int(label)}.mrc'


@dataclass
class MapClusteringResult:
    """Everything :func:`~.engine.run_map_clustering` computed.

    Attributes
    ----------
    names : list of str
    inputs : list of MapInput
    box, voxel_size : int, float
        The common grid.
    grid : list of dict
        Per map: original box and voxel size, whether it was resampled.
    similarity : numpy.ndarray
        ``(n, n)`` similarity used for clustering.
    correlation : numpy.ndarray
        ``(n, n)`` masked correlation (after alignment when aligned).
    distance : numpy.ndarray
        ``(n, n)`` ``1 - similarity``.
    clustering : Clustering
        Linkage, labels (1..k), k and its selection scores.
    mds : numpy.ndarray
        ``(n, 2)`` MDS coordinates; ``mds_stress`` its stress.
    transforms : numpy.ndarray
        ``(n, 4, 4)`` transform of each map onto the reference frame (shift in voxels).
    alignment : AlignmentResult or None
    medoids : dict or None
        Pairwise mode: cluster -> index of the map through which its members are placed.
    fsc_frequencies, fsc_curves, fsc_resolution : numpy.ndarray or None
        FSC shells (1/Å), curves ``(n, n, S)`` and resolutions (Å) when FSC is used.
    options : MapClusteringOptions
    lowpass : float or None
        Low-pass (Å) applied before comparing the maps (the option, or the interpolation
        guard).
    averages : dict
        Cluster label -> aligned average map (members normalised inside the mask).
    slices : numpy.ndarray
        ``(n, 3, box, box)`` central XY/XZ/YZ slices of the aligned maps.
    average_slices : dict
        Cluster label -> ``(3, box, box)`` central slices of its average.
    timings : dict
        Seconds per stage.
    warnings : list of str
        Problems that did not stop the run (e.g. names CSV rows that name no map).
    """
    names: list
    inputs: list
    box: int
    voxel_size: float
    grid: list
    similarity: np.ndarray
    correlation: np.ndarray
    distance: np.ndarray
    clustering: object
    mds: np.ndarray
    mds_stress: float
    transforms: np.ndarray
    alignment: object = None
    medoids: dict = None
    fsc_frequencies: np.ndarray = None
    fsc_curves: np.ndarray = None
    fsc_resolution: np.ndarray = None
    options: object = None
    lowpass: float = None
    mask_name: str = None
    weights: np.ndarray = None
    timings: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    averages: dict = field(default_factory=dict)
    slices: np.ndarray = None
    average_slices: dict = field(default_factory=dict)
    aligned_paths: dict = field(default_factory=dict)
    aligned_cache: dict = field(default_factory=dict)
    source: object = None

    @property
    def labels(self):
        """Cluster of each map, 1..k."""
        return self.clustering.labels

    @property
    def k(self):
        return self.clustering.k

    @property
    def linkage(self):
        return self.clustering.linkage

    @property
    def aligned_maps(self):
        """The aligned maps as a lazy sequence (each computed or read when indexed)."""
        return AlignedMaps(self)

    # ------------------------------------------------------------------ tables
    def similarity_table(self, matrix=None):
        """A square matrix as a DataFrame with the map names as index and columns."""
        matrix = self.similarity if matrix is None else matrix
        return pd.DataFrame(matrix, index=pd.Index(self.names, name='name'), columns=self.names)

    def cluster_table(self):
        """``name, cluster``."""
        return pd.DataFrame({'name': self.names, 'cluster': self.labels.astype(int)})

    def mds_table(self):
        """``name, x, y, cluster``."""
        return pd.DataFrame({'name': self.names, 'x': self.mds[:, 0], 'y': self.mds[:, 1],
                             'cluster': self.labels.astype(int)})

    def k_table(self):
        """Scores of each candidate k, with the chosen one flagged."""
        table = self.clustering.k_table.copy()
        table['chosen'] = table['k'] == self.k
        return table

    def linkage_table(self):
        """The linkage matrix as ``left, right, height, size``."""
        z = self.linkage
        return pd.DataFrame({'left': z[:, 0].astype(int), 'right': z[:, 1].astype(int),
                             'height': z[:, 2], 'size': z[:, 3].astype(int)})

    def grid_table(self):
        """Each map's original box and voxel size and whether it was resampled."""
        return pd.DataFrame(self.grid, columns=['name', 'file', 'box', 'voxel_size', 'resampled',
                                                'grid_voxel_size'])

    def transforms_table(self):
        """Per map: rotation (ZYZ Euler and matrix), shift (Å), mirror, score."""
        rows = []
        scores = (self.alignment.scores if self.alignment is not None
                  else np.full(len(self.names), np.nan))
        via = {}
        if self.medoids:
            for label, medoid in self.medoids.items():
                for j in np.flatnonzero(self.labels == label):
                    via[int(j)] = self.names[medoid]
        reference = self.options.reference if self.options is not None else 0
        for i, name in enumerate(self.names):
            rotation, shift, mirror = split_transform(self.transforms[i])
            rot, tilt, psi = euler_zyz(rotation)
            row = {'name': name, 'reference': i == reference, 'mirror': mirror,
                   'rot': rot, 'tilt': tilt, 'psi': psi,
                   'shift_x': shift[0] * self.voxel_size, 'shift_y': shift[1] * self.voxel_size,
                   'shift_z': shift[2] * self.voxel_size, 'score': scores[i],
                   'placed_via': via.get(i, self.names[reference])}
            for r in range(3):
                for c in range(3):
                    row[f'r{r + 1}{c + 1}'] = rotation[r, c]
            rows.append(row)
        return pd.DataFrame(rows)

    def resampled_names(self):
        """Names of the maps that were resampled onto the common grid."""
        return [r['name'] for r in self.grid if r and r['resampled']]


class AlignedMaps(Sequence):
    """Lazy sequence of a result's aligned maps: from memory, from disk, or moved on demand."""

    def __init__(self, result):
        self.result = result

    def __len__(self):
        return len(self.result.names)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(f'map index {i} out of range for {len(self)} maps')
        i %= len(self)
        r = self.result
        if i in r.aligned_cache:
            return r.aligned_cache[i]
        if i in r.aligned_paths and os.path.exists(r.aligned_paths[i]):
            from scipion_reciprocal.formats.mrc import read_map
            return read_map(r.aligned_paths[i])[0]
        order = r.options.interpolation_order if r.options is not None else 3
        return apply_transform(r.source.get(i), r.transforms[i], order)


# ----------------------------------------------------------------------------- writing

def summary_text(result):
    """A plain-text report of the run: inputs, grid, settings, clusters, timings."""
    o = result.options
    lines = ['Map similarity clustering (scipion-reciprocal)', '']
    lines.append(f'Maps: {len(result.names)}')
    lines.append(f'Common grid: {result.box} voxels of {result.voxel_size:.4g} A '
                 f'(reference {result.names[o.reference]})')
    resampled = [r for r in result.grid if r and r['resampled']]
    if resampled:
        lines.append(f'Resampled onto the common grid ({len(resampled)}):')
        for r in resampled:
            lines.append(f'  {r["name"]}: {r["box"]} voxels of {r["voxel_size"]:.4g} A')
    else:
        lines.append('Resampled onto the common grid: none')
    lines.append(f'Mask: {result.mask_name or "none (all voxels)"}')
    lowpass = result.lowpass
    guard = ' (raised to 0.8 x Nyquist: moved maps are compared below it)' if (
        lowpass and lowpass != o.lowpass) else ''
    lines.append(f'Low-pass before comparison: {f"{lowpass:.4g} A" if lowpass else "none"}{guard}')
    if o.align:
        mirror = ', mirror tested' if o.mirror else ''
        lines.append(f'Alignment: rigid, {o.align_mode}{mirror}')
        mirrored = [result.names[i] for i in range(len(result.names))
                    if np.linalg.det(result.transforms[i][:3, :3]) < 0]
        if mirrored:
            lines.append(f'  mirrored: {", ".join(mirrored)}')
    else:
        lines.append('Alignment: none')
    if o.similarity == 'fsc':
        detail = (f'resolution at FSC {o.fsc_threshold:g} over Nyquist' if o.fsc_mode ==
                  'resolution' else 'mean FSC up to ' +
                  (f'{o.fsc_max_resolution:g} A' if o.fsc_max_resolution else 'Nyquist'))
        lines.append(f'Similarity: FSC ({detail}); distance = 1 - similarity')
    else:
        lines.append('Similarity: masked Pearson correlation; distance = 1 - correlation')
    c = result.clustering
    lines.append(f'Linkage: {o.linkage}')
    if c.k_method == 'fixed':
        lines.append(f'Clusters: {c.k} (fixed)')
    else:
        name = ('mean silhouette' if c.k_method == 'silhouette'
                else 'merge-height acceleration')
        lines.append(f'Clusters: {c.k} (automatic, {c.k_method}: {name} {c.k_score:.4f})')
    lines.append(f'MDS stress: {result.mds_stress:.4g}')
    lines.append('')
    for label in sorted(result.averages):
        members = [result.names[i] for i in np.flatnonzero(result.labels == label)]
        lines.append(f'Cluster {label} ({len(members)}): {", ".join(members)}')
    if result.warnings:
        lines.append('')
        lines += [f'Warning: {w}' for w in result.warnings]
    if result.timings:
        lines.append('')
        lines.append('Timings (s):')
        for stage, seconds in result.timings.items():
            lines.append(f'  {stage}: {seconds:.2f}')
    return '\n'.join(lines) + '\n'


def chimerax_script(result, aligned_dir=ALIGNED_DIR):
    """ChimeraX commands that open each cluster's aligned members as one model group.

    Paths are relative to the script's folder (ChimeraX runs a ``.cxc`` from its own folder).
    Cluster ``k`` becomes model ``#k`` with members ``#k.1``, ``#k.2``, ..., coloured with the
    cluster colour of the plots.
    """
    lines = ['# ChimeraX: open the aligned maps of each cluster (scipion-reciprocal mapclust).',
             '# Run with: chimerax chimerax_clusters.cxc  (or "open chimerax_clusters.cxc")']
    next_id = 1000
    for label in sorted(result.averages):
        members = np.flatnonzero(result.labels == label)
        first = next_id
        lines.append(f'# cluster {label}: {len(members)} maps')
        for i in members:
            name = safe_filename(result.names[i])
            lines.append(f'open {aligned_dir}/{name}.mrc name {name} id #{next_id}')
            next_id += 1
        last = next_id - 1
        if first == last:
            # A single model would take the id itself rather than become a submodel.
            lines.append(f'rename #{first} cluster_{label}_{name} id #{label}')
        else:
            lines.append(f'rename #{first}-{last} id #{label}')
            lines.append(f'rename #{label} cluster_{label}')
        lines.append(f'volume #{label} color {cluster_colour(label)} style surface')
    lines.append('view')
    return '\n'.join(lines) + '\n'


def write_results(result, outdir, plot=None):
    """Write a result's tables, maps, ChimeraX script and summary to a folder.

    Parameters
    ----------
    result : MapClusteringResult
    outdir : ResultFolder, str or Path
        Where the files go, each under a temporary name first (recorded when a ResultFolder;
        the caller finishes it). Aligned maps already written there by the run are kept; the
        others are moved and written one at a time.
    plot : callable, optional
        ``plot(result, outdir)`` drawing the figures (e.g.
        :func:`scipion_reciprocal.plotting.mapclust.save_plots`); core stays free of matplotlib.

    Returns
    -------
    dict
        File kind -> path (the map folders for the maps).
    """
    from scipion_reciprocal.formats.mrc import write_map
    from scipion_reciprocal.formats.result_folder import as_result_folder
    out = as_result_folder(outdir)
    files = {}

    def put(key, name, frame, index=False):
        files[key] = str(out.write_csv(name, frame, index=index))

    put('similarity', SIMILARITY_CSV, result.similarity_table(), index=True)
    put('correlation', CORRELATION_CSV, result.similarity_table(result.correlation), index=True)
    if result.fsc_resolution is not None:
        put('fsc_resolution', FSC_RESOLUTION_CSV, result.similarity_table(result.fsc_resolution),
            index=True)
    put('clusters', CLUSTERS_CSV, result.cluster_table())
    put('transforms', TRANSFORMS_CSV, result.transforms_table())
    put('k_selection', K_SELECTION_CSV, result.k_table())
    put('mds', MDS_CSV, result.mds_table())
    put('linkage', LINKAGE_CSV, result.linkage_table())
    put('grid', GRID_CSV, result.grid_table())

    maps = result.aligned_maps
    for i, name in enumerate(result.names):
        path = out.path(aligned_relpath(name))
        if result.aligned_paths.get(i) != str(path) or not path.exists():
            with out.writing(aligned_relpath(name)) as tmp:
                write_map(tmp, maps[i], result.voxel_size)
            result.aligned_paths[i] = str(path)
    files['aligned'] = str(out.path(ALIGNED_DIR))
    for label, volume in result.averages.items():
        with out.writing(f'{AVERAGES_DIR}/{average_filename(label)}') as tmp:
            write_map(tmp, volume, result.voxel_size)
    files['averages'] = str(out.path(AVERAGES_DIR))

    labels = sorted(result.average_slices)
    with out.writing(SLICES_NPZ) as tmp, open(tmp, 'wb') as handle:
        np.savez_compressed(handle, names=np.array(result.names),
                            labels=result.labels.astype(int), slices=result.slices,
                            average_labels=np.array(labels, dtype=int),
                            average_slices=np.stack([result.average_slices[k] for k in labels]))
    files['slices'] = str(out.path(SLICES_NPZ))
    files['chimerax'] = str(out.write_text(CHIMERAX_CXC, chimerax_script(result)))
    files['summary'] = str(out.write_text(SUMMARY_TXT, summary_text(result)))
    if plot is not None:
        files.update(plot(result, out))
    return files


def aligned_relpath(name):
    """Path of a map's aligned copy in the results folder."""
    return f'{ALIGNED_DIR}/{safe_filename(name)}.mrc'


def read_results(outdir):
    """Read back the tables written by :func:`write_results` (for viewers).

    Returns
    -------
    dict
        ``similarity`` (square DataFrame), ``clusters``, ``transforms``, ``k_selection``,
        ``mds``, ``linkage``, ``grid`` DataFrames, ``correlation`` and ``fsc_resolution`` when
        present, and ``slices`` (the npz arrays as a dict) when present.
    """
    out = Path(outdir)
    tables = {'similarity': pd.read_csv(out / SIMILARITY_CSV, index_col=0),
              'clusters': pd.read_csv(out / CLUSTERS_CSV),
              'transforms': pd.read_csv(out / TRANSFORMS_CSV),
              'k_selection': pd.read_csv(out / K_SELECTION_CSV),
              'mds': pd.read_csv(out / MDS_CSV),
              'linkage': pd.read_csv(out / LINKAGE_CSV),
              'grid': pd.read_csv(out / GRID_CSV)}
    for key, name in (('correlation', CORRELATION_CSV), ('fsc_resolution', FSC_RESOLUTION_CSV)):
        if (out / name).exists():
            tables[key] = pd.read_csv(out / name, index_col=0)
    if (out / SLICES_NPZ).exists():
        with np.load(out / SLICES_NPZ) as npz:
            tables['slices'] = {key: npz[key] for key in npz.files}
    return tables
