"""Figures of RECOVAR results, drawn from arrays (no pyplot state, Agg canvas).

Inputs come from :mod:`scipion_reciprocal.formats.recovar_results`; every function returns a
``matplotlib.figure.Figure`` to be saved with ``fig.savefig`` or shown by a viewer.
"""
import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ['eigenvalues_figure', 'fsc_resolution', 'fsc_figure', 'latent_figure', 'umap_figure',
           'contrast_figure', 'density_figure', 'density_alphas_figure', 'lcurve_figure',
           'trajectory_density_figure']

FSC_THRESHOLD = 1.0 / 7.0


def _figure(width, height):
    fig = Figure(figsize=(width, height), layout='constrained')
    FigureCanvasAgg(fig)
    return fig


def _cluster_colours(n):
    cmap = colormaps['tab10' if n <= 10 else 'tab20']
    return [cmap(i % cmap.N) for i in range(n)]


def eigenvalues_figure(eigenvalues, n_shown=40):
    """Eigenvalue spectrum of the covariance (log scale), the first ``n_shown`` values."""
    values = np.asarray(eigenvalues, dtype=float)[:n_shown]
    fig = _figure(5.5, 3.8)
    ax = fig.subplots()
    ax.semilogy(np.arange(1, len(values) + 1), values, 'o-', ms=4)
    ax.set_xlabel('principal component')
    ax.set_ylabel('eigenvalue')
    ax.set_title('eigenvalue spectrum')
    ax.grid(True, alpha=0.3)
    return fig


def fsc_resolution(frequency, fsc, threshold=FSC_THRESHOLD):
    """Resolution (Å) where ``fsc`` first falls below ``threshold`` (linear interpolation)."""
    fsc = np.asarray(fsc, dtype=float)
    below = np.flatnonzero(fsc < threshold)
    if not below.size:
        return 1.0 / frequency[-1]
    i = below[0]
    if i == 0:
        return 1.0 / frequency[0]
    f0, f1, c0, c1 = frequency[i - 1], frequency[i], fsc[i - 1], fsc[i]
    return 1.0 / (f0 + (c0 - threshold) * (f1 - f0) / (c0 - c1))


def fsc_figure(frequency, curves, threshold=FSC_THRESHOLD, title='mean: half-map FSC'):
    """FSC curves (``{'unmasked': fsc, 'masked': fsc}``) against 1/Å; resolutions in the legend."""
    fig = _figure(5.5, 3.8)
    ax = fig.subplots()
    for name, fsc in curves.items():
        ax.plot(frequency, fsc, lw=2,
                label=f'{name} ({fsc_resolution(frequency, fsc, threshold):.1f} Å)')
    ax.axhline(threshold, color='0.4', ls='--', lw=1, label=f'{threshold:.3f}')
    ax.set_xlabel('spatial frequency (1/Å)')
    ax.set_ylabel('FSC')
    ax.set_ylim(-0.1, 1.05)
    ax.set_title(title)
    ax.legend(frameon=False)
    return fig


def _scatter_clusters(ax, x, y, labels, centers, dims):
    if labels is None:
        ax.scatter(x, y, s=3, alpha=0.4, lw=0, color='0.3')
    else:
        colours = _cluster_colours(int(labels.max()) + 1 if labels.size else 1)
        for k, colour in enumerate(colours):
            members = labels == k
            ax.scatter(x[members], y[members], s=3, alpha=0.5, lw=0, color=colour)
    if centers is not None:
        _annotate_centres(ax, centers[:, dims[0]], centers[:, dims[1]])


def _annotate_centres(ax, cx, cy):
    ax.scatter(cx, cy, s=60, marker='X', color='k', edgecolor='w', lw=0.8, zorder=3)
    for k, (x, y) in enumerate(zip(cx, cy)):
        ax.annotate(str(k), (x, y), xytext=(4, 4), textcoords='offset points', fontsize=8,
                    fontweight='bold', zorder=4)


def _draw_path(ax, path, points, dims):
    ax.plot(path[:, dims[0]], path[:, dims[1]], '-', color='cornflowerblue', lw=2, zorder=4)
    if points is not None:
        points = np.asarray(points, dtype=float)
        ax.scatter(points[:, dims[0]], points[:, dims[1]], s=30, color='w', edgecolor='k',
                   zorder=5)


def latent_figure(coords, labels=None, centers=None, dims=(0, 1), gridsize=40, title=None,
                  path=None, path_points=None):
    """Latent space in two principal components: scatter coloured by k-means label, and hexbin.

    Parameters
    ----------
    coords : numpy.ndarray
        ``(N, zdim)`` latent coordinates (NaN rows are skipped).
    labels : numpy.ndarray, optional
        ``(N,)`` k-means labels (-1: none).
    centers : numpy.ndarray, optional
        ``(K, zdim)`` k-means centres, marked and numbered on both panels.
    dims : tuple of int
        The two components shown (0-based).
    path, path_points : numpy.ndarray, optional
        ``(M, zdim)`` a trajectory drawn as a line and ``(n, zdim)`` its volume points.
    """
    coords = np.asarray(coords, dtype=float)
    keep = np.isfinite(coords).all(axis=1)
    if labels is not None:
        labels = np.asarray(labels)[keep]
    x, y = coords[keep, dims[0]], coords[keep, dims[1]]
    fig = _figure(10, 4.6)
    left, right = fig.subplots(1, 2)
    _scatter_clusters(left, x, y, labels, centers, dims)
    hexes = right.hexbin(x, y, gridsize=gridsize, bins='log', mincnt=1, cmap='viridis')
    fig.colorbar(hexes, ax=right, label='particles (log)')
    if centers is not None:
        _annotate_centres(right, centers[:, dims[0]], centers[:, dims[1]])
    for ax in (left, right):
        if path is not None:
            _draw_path(ax, np.asarray(path, dtype=float), path_points, dims)
        ax.set_xlabel(f'PC {dims[0] + 1}')
        ax.set_ylabel(f'PC {dims[1] + 1}')
    left.set_title('particles by k-means cluster' if labels is not None else 'particles')
    right.set_title('particle density')
    fig.suptitle(title or f'latent space ({len(x)} particles)')
    return fig


def umap_figure(umap, labels=None, center_rows=None):
    """UMAP embedding ``(N, 2)`` coloured by k-means label; ``center_rows`` marks chosen rows."""
    umap = np.asarray(umap, dtype=float)
    keep = np.isfinite(umap).all(axis=1)
    fig = _figure(5.5, 5)
    ax = fig.subplots()
    _scatter_clusters(ax, umap[keep, 0], umap[keep, 1],
                      None if labels is None else np.asarray(labels)[keep], None, (0, 1))
    if center_rows is not None:
        rows = np.asarray(center_rows, dtype=int)
        _annotate_centres(ax, umap[rows, 0], umap[rows, 1])
    ax.set_xlabel('UMAP 1')
    ax.set_ylabel('UMAP 2')
    ax.set_title('UMAP of the latent space')
    return fig


def contrast_figure(contrasts, bins=60):
    """Histogram of per-particle contrasts (NaN rows skipped), median marked."""
    values = np.asarray(contrasts, dtype=float)
    values = values[np.isfinite(values)]
    fig = _figure(5.5, 3.8)
    ax = fig.subplots()
    ax.hist(values, bins=bins, color='#4c72b0')
    if values.size:
        ax.axvline(np.median(values), color='k', ls='--', lw=1,
                   label=f'median {np.median(values):.3f}')
        ax.legend(frameon=False)
    ax.set_xlabel('contrast')
    ax.set_ylabel('particles')
    ax.set_title('per-particle contrast')
    return fig


def _marginal(density, dims):
    density = np.asarray(density, dtype=float)
    others = tuple(a for a in range(density.ndim) if a not in dims)
    plane = density.sum(axis=others) if others else density
    return plane if dims[0] < dims[1] else plane.T


def _draw_density(ax, density, bounds, dims, points=None, path=None):
    plane = _marginal(density, dims)
    bounds = np.asarray(bounds, dtype=float)
    extent = (bounds[dims[0], 0], bounds[dims[0], 1], bounds[dims[1], 0], bounds[dims[1], 1])
    image = ax.imshow(plane.T, origin='lower', extent=extent, aspect='auto', cmap='inferno')
    if path is not None:
        path = np.asarray(path, dtype=float)
        ax.plot(path[:, dims[0]], path[:, dims[1]], '-', color='cornflowerblue', lw=2)
    if points is not None:
        points = np.asarray(points, dtype=float)
        ax.scatter(points[:, dims[0]], points[:, dims[1]], s=30, color='w', edgecolor='k',
                   zorder=3)
    ax.set_xlim(extent[:2])
    ax.set_ylim(extent[2:])
    ax.set_xlabel(f'PC {dims[0] + 1}')
    ax.set_ylabel(f'PC {dims[1] + 1}')
    return image


def density_figure(density, bounds, points=None, path=None, title='conformational density'):
    """Marginals of a gridded density on every pair of its first (up to 4) dimensions.

    Parameters
    ----------
    density : numpy.ndarray
        Density on a ``(n,) * d`` grid (``estimate_conformational_density``).
    bounds : numpy.ndarray
        ``(d, 2)`` latent bounds of the grid.
    points : numpy.ndarray, optional
        ``(k, >= d)`` latent points drawn on top (k-means centres, stable states).
    path : numpy.ndarray, optional
        ``(m, >= d)`` a trajectory drawn as a line.
    """
    d = min(np.ndim(density), 4)
    pairs = [(i, j) for i in range(d) for j in range(i + 1, d)] or [(0, 0)]
    if np.ndim(density) == 1:
        return _density_1d(density, bounds, points, title)
    fig = _figure(3.4 * len(pairs), 3.4)
    axes = np.atleast_1d(fig.subplots(1, len(pairs)))
    for ax, dims in zip(axes, pairs):
        _draw_density(ax, density, bounds, dims, points, path)
    fig.suptitle(title)
    return fig


def _density_1d(density, bounds, points, title):
    bounds = np.asarray(bounds, dtype=float).reshape(-1)
    grid = np.linspace(bounds[0], bounds[1], len(density))
    fig = _figure(5.5, 3.8)
    ax = fig.subplots()
    ax.plot(grid, density, lw=2)
    if points is not None:
        for x in np.asarray(points, dtype=float).reshape(len(points), -1)[:, 0]:
            ax.axvline(x, color='k', ls=':', lw=1)
    ax.set_xlabel('PC 1')
    ax.set_ylabel('density')
    ax.set_title(title)
    return fig


def density_alphas_figure(densities, bounds, alphas, knee_index=None, dims=(0, 1)):
    """The density's marginal on ``dims`` for every regularisation alpha; the knee is framed."""
    n = len(densities)
    columns = min(n, 4)
    rows = int(np.ceil(n / columns))
    fig = _figure(3.0 * columns, 3.0 * rows)
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for i, (ax, density, alpha) in enumerate(zip(axes, densities, alphas)):
        if np.ndim(density) >= 2:
            _draw_density(ax, density, bounds, dims)
        else:
            ax.plot(density)
        ax.set_title(f'{i}: alpha {alpha:.0e}' + (' (knee)' if i == knee_index else ''),
                     fontsize=9, fontweight='bold' if i == knee_index else 'normal')
        if i == knee_index:
            for spine in ax.spines.values():
                spine.set_edgecolor('red')
                spine.set_linewidth(2.5)
    for ax in axes[n:]:
        ax.set_axis_off()
    fig.suptitle('deconvolved density for each regularisation alpha')
    return fig


def lcurve_figure(alphas, costs, knee_index=None):
    """L-curve: deconvolution cost against the regularisation alpha, the knee marked."""
    alphas, costs = np.asarray(alphas, dtype=float), np.asarray(costs, dtype=float)
    fig = _figure(5.5, 4)
    ax = fig.subplots()
    ax.loglog(alphas, costs, 'o-')
    for i, (a, c) in enumerate(zip(alphas, costs)):
        ax.annotate(str(i), (a, c), xytext=(3, 3), textcoords='offset points', fontsize=8)
    if knee_index is not None:
        ax.axvline(alphas[knee_index], color='k', ls='--', lw=1,
                   label=f'knee: alpha {alphas[knee_index]:.1e}')
        ax.legend(frameon=False)
    ax.invert_xaxis()
    ax.set_xlabel('alpha (regularisation)')
    ax.set_ylabel('cost')
    ax.set_title('L-curve')
    return fig


def trajectory_density_figure(density, point_density=None, point_positions=None,
                              title='density along the trajectory'):
    """Latent density along a path; the points where volumes were computed marked.

    Parameters
    ----------
    density : numpy.ndarray
        ``(M,)`` density at each path point (``Trajectory.density``).
    point_density : numpy.ndarray, optional
        ``(n,)`` density at the volume points.
    point_positions : numpy.ndarray, optional
        ``(n,)`` their positions along the path as fractions 0..1 (evenly spaced by default).
    """
    density = np.asarray(density, dtype=float)
    fig = _figure(5.5, 3.8)
    ax = fig.subplots()
    ax.plot(np.linspace(0.0, 1.0, len(density)), density, lw=2)
    if point_density is not None:
        point_density = np.asarray(point_density, dtype=float)
        where = (np.linspace(0.0, 1.0, len(point_density)) if point_positions is None
                 else np.asarray(point_positions, dtype=float))
        ax.scatter(where, point_density, s=40, color='k', zorder=3, label='volumes')
        for k, (x, y) in enumerate(zip(where, point_density)):
            ax.annotate(str(k), (x, y), xytext=(3, 5), textcoords='offset points', fontsize=8)
        ax.legend(frameon=False)
    ax.set_xlabel('position along the path')
    ax.set_ylabel('density')
    ax.set_title(title)
    if not np.isfinite(density).any():
        ax.text(0.5, 0.5, 'RECOVAR did not compute the density along this path\n'
                          '(give it a density from estimate_conformational_density)',
                transform=ax.transAxes, ha='center', va='center', fontsize=9)
    return fig
