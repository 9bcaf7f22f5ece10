"""End-to-end map similarity clustering: ``run_map_clustering``.

Stages: inputs and common grid -> (alignment) -> similarity -> clustering and MDS -> aligned
maps, cluster averages and central slices. Maps are read one at a time; the resampled maps are
kept in memory only when they fit ``memory_budget``, otherwise they are read again in the later
passes.
"""
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from .align import (AlignOptions, align_maps, apply_transform, level_boxes, mask_in_frame,
                    scale_transform)
from .clustering import (K_METHODS, LINKAGES, cluster_maps, distance_from_similarity,
                         mds_embedding)
from .errors import MapClusteringError
from .grid import (central_slices, check_map, check_mask, fourier_resize, image_2d,
                   lowpass_filter, normalise, resample_map, same_voxel, soft_sphere)
from .inputs import collect_inputs
from .results import MapClusteringResult, aligned_relpath, write_results
from .similarity import (DEFAULT_BUDGET, CorrelationAccumulator, FSCAccumulator, fsc_curve,
                         fsc_similarity)

SIMILARITIES = ('correlation', 'fsc')
ALIGN_MODES = ('reference', 'pairwise')
FSC_MODES = ('resolution', 'mean')
#: Resolution of the interpolation guard low-pass, in voxels (0.8 x Nyquist).
GUARD_VOXELS = 2.5


@dataclass
class MapClusteringOptions:
    """Settings of :func:`run_map_clustering` (all have defaults).

    Attributes
    ----------
    reference : int
        Index of the reference map: its grid is the common grid (unless ``grid_box`` /
        ``grid_voxel_size`` say otherwise), the mask is on that grid and maps are aligned to it.
    grid_box, grid_voxel_size : int, float, optional
        Common grid; default the reference's.
    lowpass : float, optional
        Low-pass resolution (Å) applied before alignment and correlation (not to FSC, which
        is resolved by frequency already, nor to the written maps and averages).
    guard_lowpass : bool
        When maps are aligned (moved by interpolation), compare them only up to 0.8 x Nyquist
        (a low-pass at 2.5 voxels, or ``lowpass`` if lower): interpolation damps the highest
        frequencies of moved maps but not of the reference, which would otherwise make every
        map look less similar to the reference than to each other.
    align : bool
        Rigid alignment (rotation and translation).
    align_mode : {'reference', 'pairwise'}
        Align every map to the reference, or every pair (the similarity of a pair is then its
        aligned correlation on the finest alignment grid).
    mirror : bool
        Also test the mirror image (handedness) of each map.
    similarity : {'correlation', 'fsc'}
        Measure used for clustering: masked Pearson correlation, or FSC-based.
    fsc_mode : {'resolution', 'mean'}
        FSC similarity: crossing frequency of ``fsc_threshold`` over Nyquist, or mean FSC up to
        ``fsc_max_resolution``.
    fsc_threshold : float
        FSC threshold (0.143 or 0.5 usually).
    fsc_max_resolution : float, optional
        Resolution limit (Å) of the mean FSC; default Nyquist.
    linkage : {'average', 'complete', 'ward'}
    n_clusters : int or 'auto'
    k_method : {'silhouette', 'elbow'}
    max_clusters : int
        Largest k tried by ``auto``.
    interpolation_order : int
        Spline order used to move maps (1 fast, 3 accurate).
    memory_budget : int
        Bytes for maps kept in memory and for the similarity store; beyond it, maps are read
        again and vectors go to a temporary file in ``workdir``.
    workdir : str, optional
        Folder for temporary files.
    align_options : AlignOptions
        Settings of the alignment search.
    random_state : int
        Seed of the MDS embedding.
    """
    reference: int = 0
    grid_box: int = None
    grid_voxel_size: float = None
    lowpass: float = None
    guard_lowpass: bool = True
    align: bool = True
    align_mode: str = 'reference'
    mirror: bool = False
    similarity: str = 'correlation'
    fsc_mode: str = 'resolution'
    fsc_threshold: float = 0.143
    fsc_max_resolution: float = None
    linkage: str = 'average'
    n_clusters: object = 'auto'
    k_method: str = 'silhouette'
    max_clusters: int = 10
    interpolation_order: int = 3
    memory_budget: int = DEFAULT_BUDGET
    workdir: str = None
    align_options: AlignOptions = field(default_factory=AlignOptions)
    random_state: int = 0

    def checked(self, n_maps):
        """Raise :class:`MapClusteringError` for an option value that cannot be used."""
        choices = {'align_mode': ALIGN_MODES, 'similarity': SIMILARITIES, 'fsc_mode': FSC_MODES,
                   'linkage': LINKAGES, 'k_method': K_METHODS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise MapClusteringError(f'{name} must be one of {", ".join(allowed)}, got '
                                         f'{getattr(self, name)!r}')
        if not 0 <= self.reference < n_maps:
            raise MapClusteringError(f'reference must be a map index from 0 to {n_maps - 1}, got '
                                     f'{self.reference}')
        if self.lowpass is not None and not self.lowpass > 0:
            raise MapClusteringError(f'low-pass resolution must be positive, got {self.lowpass}')
        if self.n_clusters == 'auto' and self.max_clusters < 2:
            raise MapClusteringError(f'the largest number of clusters tried (max_clusters) must '
                                     f'be at least 2, got {self.max_clusters}')
        if self.interpolation_order not in (1, 3):
            raise MapClusteringError(f'interpolation order must be 1 or 3, got '
                                     f'{self.interpolation_order}')
        if self.grid_box is not None and self.grid_box < 8:
            raise MapClusteringError(f'grid box must be at least 8 voxels, got {self.grid_box}')
        if self.grid_voxel_size is not None and not self.grid_voxel_size > 0:
            raise MapClusteringError(f'grid voxel size must be positive, got '
                                     f'{self.grid_voxel_size}')
        return self


class GridMaps:
    """The input maps on the common grid, checked, loaded one at a time.

    Maps are cached after their first load while the cache stays within ``budget`` bytes.

    Attributes
    ----------
    records : list of dict
        Per map: ``name, file, box, voxel_size, resampled, grid_voxel_size``.
    """

    def __init__(self, inputs, box, voxel_size, budget):
        self.inputs, self.box, self.voxel_size = inputs, box, voxel_size
        self.cache_limit = budget // (box ** 3 * 4)
        self.cache = {}
        self.records = [None] * len(inputs)

    def __len__(self):
        return len(self.inputs)

    def get(self, i, data=None, voxel=None):
        """Map ``i`` on the common grid (``data``/``voxel``: already loaded input)."""
        if i in self.cache:
            return self.cache[i]
        entry = self.inputs[i]
        if data is None:
            data, voxel = entry.load()
        data = check_map(data, entry.path or entry.name)
        n = data.shape[0]
        resampled = n != self.box or not same_voxel(voxel, self.voxel_size, 1e-6)
        grid, reached = (resample_map(data, voxel, self.box, self.voxel_size) if resampled
                         else (data, voxel))
        if not same_voxel(reached, self.voxel_size):
            raise MapClusteringError(f'map {entry.path or entry.name}: cannot be resampled from '
                                     f'{voxel:.4g} A to {self.voxel_size:.4g} A per voxel '
                                     f'(closest {reached:.4g} A)')
        self.records[i] = {'name': entry.name, 'file': entry.path or '', 'box': n,
                           'voxel_size': voxel, 'resampled': bool(resampled),
                           'grid_voxel_size': reached}
        if len(self.cache) < self.cache_limit:
            self.cache[i] = grid
        return grid


def effective_lowpass(options, voxel_size):
    """The low-pass resolution (Å) actually applied before comparing maps, or None."""
    guard = GUARD_VOXELS * voxel_size if options.align and options.guard_lowpass else None
    if options.lowpass and guard:
        return max(options.lowpass, guard)
    return options.lowpass or guard


def _load_mask(mask, mask_voxel_size, box, voxel):
    """The mask as weights on the common grid, or None."""
    if mask is None:
        return None
    if isinstance(mask, (str, Path)):
        from scipion_reciprocal.formats.errors import FormatError
        from scipion_reciprocal.formats.mrc import read_map
        try:
            data, header_voxel = read_map(mask)
        except FormatError as exc:
            raise MapClusteringError(f'mask {exc}') from None
        return check_mask(data, box, str(mask), mask_voxel_size or header_voxel, voxel)
    return check_mask(mask, box, 'array', mask_voxel_size, voxel)


def _medoid_transforms(alignment, labels):
    """Each map's transform to the reference, through its cluster's medoid (pairwise mode)."""
    pair_t, pair_s = alignment.pair_transforms, alignment.pair_scores
    out = np.array(alignment.transforms)
    medoids = {}
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        sub = pair_s[np.ix_(members, members)]
        medoid = int(members[np.argmax(sub.sum(axis=1))])
        medoids[int(label)] = medoid
        for j in members:
            out[j] = alignment.transforms[medoid] @ pair_t[medoid, j]
    return out, medoids


def _pairwise_fsc(alignment, finest_maps, weights, voxel_size):
    """FSC curves of every aligned pair on the finest alignment grid (unfiltered maps)."""
    pyramids = alignment.pyramids
    n = len(pyramids)
    scale = pyramids[0].levels[-1].scale
    voxel = voxel_size / scale
    curves = freqs = None
    for i in range(n):
        box = finest_maps[i].shape[0]
        w = (mask_in_frame(weights, pyramids[i], alignment.transforms[i])[-1] if weights is not None
             else soft_sphere(box))
        for j in range(i + 1, n):
            moved = apply_transform(finest_maps[j],
                                    scale_transform(alignment.pair_transforms[i, j], scale),
                                    order=3)
            freqs, fsc = fsc_curve(finest_maps[i], moved, voxel, w)
            if curves is None:
                curves = np.ones((n, n, len(fsc)))
            curves[i, j] = curves[j, i] = fsc
    return freqs, curves


def run_map_clustering(maps, *, voxel_sizes=None, names=None, names_csv=None, mask=None,
                       mask_voxel_size=None, outdir=None, plot=None, options=None, progress=None,
                       warn=None, **settings):
    """Cluster maps by similarity, with optional resampling, low-pass and rigid alignment.

    Parameters
    ----------
    maps : sequence
        MRC paths, 3D arrays (with ``voxel_sizes``) or :class:`~.inputs.MapInput` objects.
    voxel_sizes : float or sequence of float, optional
        Voxel sizes (Å) of array maps, or overrides of the file headers.
    names : sequence of str, optional
        Map names (default: file stems).
    names_csv : str or Path, optional
        CSV ``original_filename,custom_name`` giving every map's name.
    mask : str, Path or numpy.ndarray, optional
        Mask on the common grid (the reference's), binary or soft; a mask of another size is an
        error.
    mask_voxel_size : float, optional
        Voxel size of an array mask (checked against the grid when given).
    outdir : ResultFolder, str or Path, optional
        When given, everything is written there as it is computed (aligned maps streamed
        during the last pass), as by :func:`~.results.write_results`; a ResultFolder records
        every file (the caller finishes it).
    plot : callable, optional
        With ``outdir``: ``plot(result, outdir)`` draws the figures (see ``write_results``).
    options : MapClusteringOptions, optional
        Settings; keyword ``settings`` override its fields (e.g. ``align=False``).
    progress : callable, optional
        Called with one-line progress messages.
    warn : callable, optional
        Called with one-line warnings (default: ``progress``); they go to the summary too.

    Returns
    -------
    MapClusteringResult

    Raises
    ------
    MapClusteringError
        Bad input, with the map or file named.
    """
    options = options or MapClusteringOptions()
    known = {f.name for f in fields(MapClusteringOptions)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise TypeError(f'unknown map clustering setting(s): {", ".join(unknown)}')
    options = replace(options, **settings)
    say = progress or (lambda message: None)
    timings = {}
    started = time.perf_counter()

    tic = time.perf_counter()
    warnings = []

    def warned(message):
        warnings.append(message)
        (warn or say)(message)

    inputs = collect_inputs(maps, voxel_sizes, names, names_csv, warn=warned)
    n = len(inputs)
    options.checked(n)
    ref = options.reference
    ref_data, ref_voxel = inputs[ref].load()
    box = int(options.grid_box or np.shape(ref_data)[0])
    voxel = float(options.grid_voxel_size or ref_voxel)
    source = GridMaps(inputs, box, voxel, options.memory_budget // 2)
    source.get(ref, ref_data, ref_voxel)
    weights = _load_mask(mask, mask_voxel_size, box, voxel)
    del ref_data
    say(f'{n} maps; common grid {box} voxels of {voxel:.4g} A (reference {inputs[ref].name})')

    lowpass = effective_lowpass(options, voxel)

    def prepared(i):
        grid = source.get(i)
        return lowpass_filter(grid, voxel, lowpass) if lowpass else grid

    use_fsc = options.similarity == 'fsc'
    pairwise = options.align and options.align_mode == 'pairwise'
    finest_maps = {}

    def for_alignment():
        # FSC compares unfiltered maps: in pairwise mode keep them on the finest search grid.
        finest = level_boxes(box, options.align_options)[-1]
        for i in range(n):
            if use_fsc and pairwise:
                finest_maps[i] = fourier_resize(source.get(i), finest)
            yield prepared(i)

    alignment = None
    if options.align:
        alignment = align_maps(for_alignment(), options.align_mode, ref, options.mirror,
                               weights, options.align_options, say)
        timings.update({f'align: {k}': v for k, v in alignment.timings.items()})
        transforms = alignment.transforms
    else:
        transforms = np.tile(np.eye(4), (n, 1, 1))
    timings['inputs' + (' and alignment' if options.align else '')] = time.perf_counter() - tic

    tic = time.perf_counter()
    fsc_freqs = fsc_curves = None
    if pairwise:
        correlation = np.array(alignment.pair_scores)
        if use_fsc:
            fsc_freqs, fsc_curves = _pairwise_fsc(alignment, finest_maps, weights, voxel)
    else:
        correlation, fsc_freqs, fsc_curves = _similarity_pass(
            source, prepared, transforms, weights, options, lowpass is not None, say)
    fsc_resolution = None
    if use_fsc:
        similarity, fsc_resolution = fsc_similarity(fsc_curves, fsc_freqs, options.fsc_mode,
                                                    options.fsc_threshold,
                                                    options.fsc_max_resolution)
    else:
        similarity = correlation
    timings['similarity'] = time.perf_counter() - tic
    say(f'similarity ({options.similarity}) of {n * (n - 1) // 2} pairs '
        f'({timings["similarity"]:.1f} s)')

    tic = time.perf_counter()
    distance = distance_from_similarity(similarity)
    clustering = cluster_maps(distance, options.linkage, options.n_clusters, options.k_method,
                              options.max_clusters)
    coords, stress = mds_embedding(distance, options.random_state)
    timings['clustering and MDS'] = time.perf_counter() - tic
    score = '' if np.isnan(clustering.k_score) else f', score {clustering.k_score:.3f}'
    say(f'{clustering.k} clusters ({clustering.k_method}{score})')

    medoids = None
    if pairwise:
        transforms, medoids = _medoid_transforms(alignment, clustering.labels)
    mask_name = None if mask is None else str(mask) if isinstance(mask, (str, Path)) else 'array'
    result = MapClusteringResult(
        names=[e.name for e in inputs], inputs=inputs, box=box, voxel_size=voxel,
        grid=source.records, similarity=similarity, correlation=correlation,
        distance=distance, clustering=clustering, mds=coords, mds_stress=stress,
        transforms=transforms, alignment=alignment, medoids=medoids,
        fsc_frequencies=fsc_freqs, fsc_curves=fsc_curves, fsc_resolution=fsc_resolution,
        options=options, lowpass=lowpass, mask_name=mask_name, weights=weights, timings=timings,
        warnings=warnings)

    tic = time.perf_counter()
    from scipion_reciprocal.formats.result_folder import as_result_folder
    out = as_result_folder(outdir) if outdir is not None else None
    _averages_pass(result, source, out, say)
    timings['aligned maps and averages'] = time.perf_counter() - tic
    if alignment is not None:
        alignment.pyramids = None
    timings['total'] = time.perf_counter() - started
    if out is not None:
        write_results(result, out, plot=plot)
    return result


def _similarity_pass(source, prepared, transforms, weights, options, filtered, say):
    """Correlation (and FSC) of the maps moved by their transforms, streamed one at a time.

    Correlation uses the prepared (low-passed) maps; FSC the unfiltered ones.
    """
    n = len(source)
    use_fsc = options.similarity == 'fsc'
    budget = options.memory_budget // 2
    corr_acc = CorrelationAccumulator(n, weights, budget, options.workdir)
    fsc_acc = (FSCAccumulator(n, source.voxel_size, weights, budget, options.workdir)
               if use_fsc else None)
    identity = np.eye(4)

    def moved(volume, i):
        if np.array_equal(transforms[i], identity):
            return volume
        return apply_transform(volume, transforms[i], options.interpolation_order)

    try:
        for i in range(n):
            _every_tenth(say, i, n, 'similarity')
            volume = moved(prepared(i), i)
            corr_acc.add(i, volume, source.inputs[i].name)
            if use_fsc:
                fsc_acc.add(i, moved(source.get(i), i) if filtered else volume)
        correlation = corr_acc.result()
        fsc_freqs, fsc_curves = fsc_acc.result() if use_fsc else (None, None)
    finally:
        corr_acc.close()
        if fsc_acc is not None:
            fsc_acc.close()
    return correlation, fsc_freqs, fsc_curves


def _every_tenth(say, i, n, stage):
    """Report progress about ten times over a loop of ``n`` maps."""
    if n >= 10 and i % max(1, n // 10) == 0 and i:
        say(f'{stage}: {i}/{n} maps')


def _averages_pass(result, source, out, say):
    """Move every map, keep its central slices, add it to its cluster's average, write it
    (into ``out``, a ResultFolder, when given)."""
    from scipion_reciprocal.formats.mrc import write_map
    labels = result.clustering.labels
    box, order = result.box, result.options.interpolation_order
    sums = {int(k): np.zeros((box, box, box), dtype=np.float32) for k in np.unique(labels)}
    counts = {k: 0 for k in sums}
    slices = np.empty((len(labels), 3, box, box), dtype=np.float32)
    kept = {}
    keep_limit = source.cache_limit
    for i, entry in enumerate(result.inputs):
        _every_tenth(say, i, len(labels), 'aligned maps and averages')
        grid = source.get(i)
        moved = (grid if np.array_equal(result.transforms[i], np.eye(4))
                 else apply_transform(grid, result.transforms[i], order))
        slices[i] = central_slices(moved)
        sums[int(labels[i])] += normalise(moved, result.weights, entry.name)
        counts[int(labels[i])] += 1
        if out is not None:
            with out.writing(aligned_relpath(entry.name)) as tmp:
                write_map(tmp, moved, result.voxel_size)
            result.aligned_paths[i] = str(out.path(aligned_relpath(entry.name)))
        if len(kept) < keep_limit:
            kept[i] = moved
    result.aligned_cache = kept
    result.averages = {k: (sums[k] / counts[k]).astype(np.float32) for k in sorted(sums)}
    result.slices = slices
    result.average_slices = {k: central_slices(v) for k, v in result.averages.items()}
    result.source = source
    say(f'{len(labels)} maps moved, {len(sums)} cluster averages')


def check_inputs(maps, voxel_sizes=None, names=None, names_csv=None, mask=None, reference=0,
                 read_data=False):
    """Problems with the inputs that can be found before running (for a protocol's _validate).

    Headers are read for files (sizes, voxel sizes); with ``read_data`` every map is also read
    and checked for NaN/Inf and all-zero content.

    Parameters
    ----------
    maps, voxel_sizes, names, names_csv, mask
        As for :func:`run_map_clustering`.
    reference : int
        Index of the reference map (its grid is the common grid).
    read_data : bool
        Also read the maps' values.

    Returns
    -------
    list of str
        One message per problem, each naming the map or file; empty when all is well.
    """
    from scipion_reciprocal.formats.errors import FormatError
    from scipion_reciprocal.formats.mrc import validate_mrc
    try:
        inputs = collect_inputs(maps, voxel_sizes, names, names_csv)
    except MapClusteringError as exc:
        return [str(exc)]
    problems = []
    shapes = []
    for entry in inputs:
        where = entry.path or entry.name
        try:
            if entry.path is not None:
                header = validate_mrc(entry.path)
                shape, voxel = header['shape'], entry.voxel_size or header['voxel_size']
            else:
                shape, voxel = np.shape(entry.data), entry.voxel_size
        except FormatError as exc:
            problems.append(f'map {entry.name}: {exc}')
            shapes.append(None)
            continue
        shapes.append(shape)
        if image_2d(shape):
            problems.append(f'map {where}: {image_2d(shape)}')
        elif len(shape) != 3 or len(set(shape)) != 1:
            dims = ' x '.join(str(s) for s in shape[::-1])
            problems.append(f'map {where}: not a cubic 3D map ({dims} voxels)')
        elif not voxel or voxel <= 0:
            problems.append(f'map {where}: voxel size unknown ({voxel}); give it explicitly')
        elif read_data:
            try:
                check_map(entry.load()[0], where)
            except MapClusteringError as exc:
                problems.append(str(exc))
    if not 0 <= reference < len(inputs):
        problems.append(f'reference must be a map index from 0 to {len(inputs) - 1}, got '
                        f'{reference}')
    elif mask is not None and shapes[reference] is not None:
        box = shapes[reference][0]
        if isinstance(mask, (str, Path)):
            try:
                mask_shape = validate_mrc(mask)['shape']
            except FormatError as exc:
                return problems + [f'mask {exc}']
        else:
            mask_shape = np.shape(mask)
        if tuple(mask_shape) != (box, box, box):
            dims = ' x '.join(str(s) for s in tuple(mask_shape)[::-1])
            problems.append(f'mask {mask if isinstance(mask, (str, Path)) else "array"}: size '
                            f'{dims} differs from the reference map {inputs[reference].name} '
                            f'({box} x {box} x {box})')
    return problems
