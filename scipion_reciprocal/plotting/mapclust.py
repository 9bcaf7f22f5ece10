"""Figures of map similarity clustering, drawn from its tables (no pyplot state, Agg canvas).

Every figure function takes plain tables (DataFrames, arrays) and returns a
``matplotlib.figure.Figure``; :func:`save_plots` draws them all from a result, and
:func:`save_plots_from_dir` from the files that ``write_results`` wrote (for viewers).
"""
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.cluster import hierarchy

from scipion_reciprocal.core.mapsim.results import cluster_colour, read_results
from scipion_reciprocal.formats.result_folder import as_result_folder

HEATMAP_PNG = 'similarity_matrix_heatmap.png'
DENDROGRAM_PNG = 'dendrogram.png'
MDS_PNG = 'mds.png'
MONTAGE_PNG = 'cluster_{label}_montage.png'

_PLANES = ('XY', 'XZ', 'YZ')


def _figure(width, height):
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _linkage_array(linkage):
    if isinstance(linkage, pd.DataFrame):
        return linkage[['left', 'right', 'height', 'size']].to_numpy(dtype=float)
    return np.asarray(linkage, dtype=float)


def leaf_order(linkage):
    """Map indices in dendrogram order."""
    return [int(i) for i in hierarchy.leaves_list(_linkage_array(linkage))]


def plot_heatmap(similarity, linkage=None, labels=None, title='Map similarity'):
    """Heatmap of a square similarity matrix, rows and columns in dendrogram order.

    Parameters
    ----------
    similarity : pandas.DataFrame
        Square matrix with map names as index and columns.
    linkage : numpy.ndarray or pandas.DataFrame, optional
        Linkage matrix giving the order (default: the table's order).
    labels : sequence of int, optional
        Cluster of each map (table order); cluster boundaries are outlined.
    title : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    order = leaf_order(linkage) if linkage is not None else list(range(len(similarity)))
    matrix = similarity.to_numpy(dtype=float)[np.ix_(order, order)]
    names = [str(similarity.index[i]) for i in order]
    n = len(names)
    size = min(4.0 + 0.28 * n, 18.0)
    fig = _figure(size + 1.5, size)
    ax = fig.add_subplot(1, 1, 1)
    off = matrix[~np.eye(n, dtype=bool)]
    # The diagonal (1) would otherwise stretch the colour scale over the interesting range.
    vmin = vmax = None
    if off.size and np.ptp(off) > 0:
        vmin, vmax = float(off.min()), float(off.max())
    image = ax.imshow(matrix, cmap='viridis', interpolation='nearest', vmin=vmin, vmax=vmax)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if n <= 60:
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.set_xticklabels(names, rotation=90, fontsize=8)
        ax.set_yticklabels(names, fontsize=8)
    if labels is not None:
        ordered = np.asarray(labels)[order]
        start = 0
        for k in range(1, n + 1):
            if k == n or ordered[k] != ordered[start]:
                ax.add_patch(_box(start, k, cluster_colour(ordered[start])))
                start = k
    ax.set_title(title)
    fig.tight_layout()
    return fig


def _box(start, stop, colour):
    from matplotlib.patches import Rectangle
    return Rectangle((start - 0.5, start - 0.5), stop - start, stop - start, fill=False,
                     edgecolor=colour, linewidth=2.0)


def plot_dendrogram(linkage, names, cut_height=None, labels=None, title='Dendrogram'):
    """Dendrogram with the cut line; branches inside one cluster take its colour.

    Parameters
    ----------
    linkage : numpy.ndarray or pandas.DataFrame
        scipy linkage matrix.
    names : sequence of str
        Map names, in input order.
    cut_height : float, optional
        Height of the cut giving the clusters (drawn as a dashed line).
    labels : sequence of int, optional
        Cluster of each map (input order).
    title : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    z = _linkage_array(linkage)
    n = len(names)
    fig = _figure(min(5.0 + 0.3 * n, 20.0), 5.0)
    ax = fig.add_subplot(1, 1, 1)
    colour_of = None
    if labels is not None:
        labels = np.asarray(labels)
        members = {i: {int(labels[i])} for i in range(n)}
        for row, (a, b, _, _) in enumerate(z):
            members[n + row] = members[int(a)] | members[int(b)]

        def colour_of(node):
            clusters = members[node]
            return cluster_colour(next(iter(clusters))) if len(clusters) == 1 else '#555555'
    hierarchy.dendrogram(z, labels=list(names), ax=ax, leaf_rotation=90,
                         link_color_func=colour_of, color_threshold=None)
    if cut_height is not None:
        ax.axhline(cut_height, color='k', linestyle='--', linewidth=1.0,
                   label=f'cut at {cut_height:.3g}')
        ax.legend(loc='upper right', fontsize=8)
    ax.set_ylabel('distance')
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_mds(mds, title='MDS embedding of the distances'):
    """Scatter of the 2D MDS coordinates, coloured by cluster, points named.

    Parameters
    ----------
    mds : pandas.DataFrame
        Columns ``name, x, y, cluster``.
    title : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = _figure(6.5, 5.5)
    ax = fig.add_subplot(1, 1, 1)
    for label, group in mds.groupby('cluster', sort=True):
        ax.scatter(group['x'], group['y'], s=50, color=cluster_colour(label),
                   label=f'cluster {label}', edgecolor='k', linewidth=0.5)
    if len(mds) <= 80:
        for _, row in mds.iterrows():
            ax.annotate(str(row['name']), (row['x'], row['y']), fontsize=7,
                        xytext=(3, 3), textcoords='offset points')
    ax.set_xlabel('MDS 1')
    ax.set_ylabel('MDS 2')
    ax.set_aspect('equal', adjustable='datalim')
    ax.legend(fontsize=8, loc='best')
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_cluster_montage(label, average_slices, member_slices, member_names, max_members=8):
    """Central XY/XZ/YZ slices of a cluster's average (first row) and its members.

    Parameters
    ----------
    label : int
        Cluster number.
    average_slices : numpy.ndarray
        ``(3, box, box)`` slices of the average.
    member_slices : numpy.ndarray
        ``(m, 3, box, box)`` slices of the members.
    member_names : sequence of str
    max_members : int
        Members shown (the rest are counted in the title).

    Returns
    -------
    matplotlib.figure.Figure
    """
    shown = min(len(member_names), max_members)
    rows = 1 + shown
    fig = _figure(6.0, 2.0 * rows + 0.4)
    images = [('average', average_slices)] + [(member_names[i], member_slices[i])
                                              for i in range(shown)]
    for r, (name, slices) in enumerate(images):
        for c in range(3):
            ax = fig.add_subplot(rows, 3, 3 * r + c + 1)
            img = slices[c]
            lo, hi = np.percentile(img, [1, 99.5])
            ax.imshow(img, cmap='gray', origin='lower', vmin=lo, vmax=hi if hi > lo else lo + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(_PLANES[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(str(name), fontsize=8)
    extra = len(member_names) - shown
    more = f' (+{extra} more)' if extra > 0 else ''
    fig.suptitle(f'Cluster {label}: {len(member_names)} maps{more}',
                 color=cluster_colour(label))
    fig.tight_layout()
    return fig


def plot_all(tables, outdir):
    """Draw and save every figure from tables shaped like ``read_results`` output.

    Parameters
    ----------
    tables : dict
        ``similarity``, ``clusters``, ``linkage``, ``k_selection``, ``mds`` DataFrames and,
        for the montages, ``slices`` (arrays ``names, labels, slices, average_labels,
        average_slices``).
    outdir : ResultFolder, str or Path
        Each figure is written under a temporary name first (and recorded, in a ResultFolder).

    Returns
    -------
    dict
        Figure kind -> PNG path.
    """
    out = as_result_folder(outdir)
    clusters = tables['clusters']
    labels = clusters['cluster'].to_numpy()
    names = [str(n) for n in clusters['name']]
    chosen = tables['k_selection']
    chosen = chosen[chosen['chosen'].astype(bool)] if 'chosen' in chosen else chosen
    cut = float(chosen['cut_height'].iloc[0]) if len(chosen) else None
    files = {}

    def save(key, fig, name):
        files[key] = str(out.save_figure(name, fig))

    save('heatmap', plot_heatmap(tables['similarity'], tables['linkage'], labels), HEATMAP_PNG)
    save('dendrogram', plot_dendrogram(tables['linkage'], names, cut, labels), DENDROGRAM_PNG)
    save('mds', plot_mds(tables['mds']), MDS_PNG)
    slices = tables.get('slices')
    if slices is not None:
        member_labels = np.asarray(slices['labels'])
        slice_names = [str(n) for n in slices['names']]
        for k, label in enumerate(slices['average_labels']):
            members = np.flatnonzero(member_labels == label)
            fig = plot_cluster_montage(int(label), slices['average_slices'][k],
                                       slices['slices'][members],
                                       [slice_names[i] for i in members])
            save(f'montage_{int(label)}', fig, MONTAGE_PNG.format(label=int(label)))
    return files


def save_plots(result, outdir):
    """Draw and save every figure of a ``MapClusteringResult`` (usable as ``plot=`` callback)."""
    labels = sorted(result.average_slices)
    tables = {'similarity': result.similarity_table(), 'clusters': result.cluster_table(),
              'linkage': result.linkage_table(), 'k_selection': result.k_table(),
              'mds': result.mds_table()}
    if result.slices is not None and labels:
        tables['slices'] = {'names': np.array(result.names), 'labels': result.labels,
                            'slices': result.slices, 'average_labels': np.array(labels),
                            'average_slices': np.stack([result.average_slices[k]
                                                        for k in labels])}
    return plot_all(tables, outdir)


def save_plots_from_dir(outdir, figdir=None):
    """Draw every figure from the files in a results folder (written by ``write_results``)."""
    return plot_all(read_results(outdir), figdir or outdir)
