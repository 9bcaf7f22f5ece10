"""Figures of RECOVAR's particle cleaning (junk detection, pipeline with outliers), drawn from
arrays (Agg canvas, no pyplot state). Inputs come from :mod:`..formats.recovar_cleaning`."""
import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ['flagged_latent_figure', 'junk_clusters_figure', 'outlier_rounds_figure']

_KEPT_COLOUR, _FLAGGED_COLOUR = '#4c72b0', '#dd3333'


def _figure(width, height):
    fig = Figure(figsize=(width, height), layout='constrained')
    FigureCanvasAgg(fig)
    return fig


def flagged_latent_figure(coords, groups, names, title, dims=(0, 1)):
    """Latent space (two components) with every particle coloured by its group.

    Parameters
    ----------
    coords : numpy.ndarray
        ``(N, zdim)`` coordinates (NaN rows are skipped).
    groups : numpy.ndarray
        ``(N,)`` int group of each particle, an index into ``names`` (group 0 is drawn first,
        underneath).
    names : sequence of str
        Legend label of each group.
    """
    coords = np.asarray(coords, dtype=float)
    groups = np.asarray(groups)
    keep = np.isfinite(coords).all(axis=1)
    fig = _figure(6.0, 4.8)
    ax = fig.subplots()
    colours = ([_KEPT_COLOUR, _FLAGGED_COLOUR] if len(names) == 2 else
               [colormaps['viridis'](i / max(len(names) - 1, 1)) for i in range(len(names))])
    if coords.shape[1] < 2:  # one latent dimension: coordinate against particle number
        coords = np.column_stack([np.arange(len(coords)), coords[:, 0]])
        dims = (0, 1)
        ax.set_xlabel('particle')
        ax.set_ylabel('PC 1')
    else:
        ax.set_xlabel(f'PC {dims[0] + 1}')
        ax.set_ylabel(f'PC {dims[1] + 1}')
    for group, (name, colour) in enumerate(zip(names, colours)):
        members = keep & (groups == group)
        ax.scatter(coords[members, dims[0]], coords[members, dims[1]], s=8, alpha=0.7,
                   color=colour, label=f'{name} ({int(members.sum())})', linewidths=0)
    ax.legend(frameon=False, markerscale=2)
    ax.set_title(title)
    return fig


def junk_clusters_figure(table):
    """Per k-means cluster of the junk detection: half-map FSC resolution of its
    reconstruction (junk clusters in red) and its size.

    ``table``: :func:`..formats.recovar_cleaning.junk_clusters`' table.
    """
    order = np.argsort(table['halfmap_resolution'].to_numpy())
    table = table.iloc[order]
    x = np.arange(len(table))
    colours = np.where(table['junk'].to_numpy(), _FLAGGED_COLOUR, _KEPT_COLOUR)
    resolution = np.minimum(table['halfmap_resolution'].to_numpy(float), 1e3)
    fig = _figure(max(6.0, 0.25 * len(table) + 2), 5.0)
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.bar(x, resolution, color=colours)
    top.set_ylabel('half-map FSC resolution (Å)')
    top.set_title('junk detection: reconstruction of each cluster (red: junk)')
    bottom.bar(x, table['size'].to_numpy(), color=colours)
    bottom.set_ylabel('particles')
    bottom.set_xlabel('cluster (best resolution first)')
    bottom.set_xticks(x)
    bottom.set_xticklabels(table['cluster'].astype(int).astype(str), fontsize=7,
                           rotation=90 if len(x) > 30 else 0)
    return fig


def outlier_rounds_figure(n_total, removed_per_round):
    """Particles entering each round of the pipeline with outliers, and those it removed."""
    removed = np.asarray(removed_per_round, dtype=int)
    entering = n_total - np.concatenate([[0], np.cumsum(removed)[:-1]])
    rounds = np.arange(1, len(removed) + 1)
    fig = _figure(5.5, 3.8)
    ax = fig.subplots()
    ax.bar(rounds, entering - removed, color=_KEPT_COLOUR, label='kept')
    ax.bar(rounds, removed, bottom=entering - removed, color=_FLAGGED_COLOUR, label='removed')
    for r, kept, out in zip(rounds, entering - removed, removed):
        ax.text(r, kept + out, f'-{out}', ha='center', va='bottom', fontsize=9)
    ax.set_xticks(rounds)
    ax.set_xlabel('round')
    ax.set_ylabel('particles')
    ax.set_title('pipeline with outlier removal')
    ax.legend(frameon=False, loc='lower left')
    return fig
