"""Figures of the reciprocal analysis of classifications (Agg canvas, no pyplot state).

Every function takes computed tables (a :class:`ReciprocalResult`, a job history from
:func:`~scipion_reciprocal.core.relion_jobs.read_job_history`, a class map table from
:func:`~scipion_reciprocal.core.relion_jobs.class_maps`) and returns a
``matplotlib.figure.Figure``; :func:`save_plots` writes them all as PNG (and the Sankey
diagrams as HTML too).
"""

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..formats._atomic import atomic_path
from ..formats.result_folder import journal_line
from ..formats.mrc import read_images, read_map
from .sankey import sankey_figure, sankey_html, sankey_layout
from .verdict import VERDICT_FIGURES

__all__ = ['heatmap_figure', 'sankey_figures', 'convergence_figure', 'class_slices_figure',
           'agreement_figure', 'save_plots', 'figure_entries']

PLOTS_DIR = 'plots'
HEATMAP_PNG = 'heatmap_{kind}_{job1}_vs_{job2}.png'
SANKEY_PNG = 'sankey_{values}.png'
SANKEY_HTML = 'sankey.html'
CONVERGENCE_PNG = 'convergence_{job}.png'
SLICES_PNG = 'class_slices_{job}.png'
AGREEMENT_PNG = 'agreement.png'

_TITLES = {'counts': 'shared particles', 'fractions': 'fraction of the row class',
           'jaccard': 'Jaccard index'}


def _figure(width, height):
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def heatmap_figure(result, kind, job1, job2, annotate=None):
    """Heatmap of a count, fraction or Jaccard matrix, class sizes in the tick labels.

    Parameters
    ----------
    result : ReciprocalResult
    kind : {'counts', 'fractions', 'jaccard'}
    job1, job2 : str
        Rows and columns.
    annotate : bool, optional
        Write values in the cells (default: when the matrix has at most 400 cells).
    """
    matrix = result.matrix(kind, job1, job2).to_numpy()
    size1, size2 = result.sizes(job1), result.sizes(job2)
    n1, n2 = matrix.shape
    fig = _figure(min(3 + 0.45 * n2, 24), min(2.5 + 0.4 * n1, 24))
    ax = fig.add_subplot(111)
    image = ax.imshow(matrix, cmap='viridis', aspect='auto', interpolation='nearest',
                      vmin=0, vmax=1 if kind != 'counts' else None)
    fig.colorbar(image, ax=ax, label=_TITLES[kind])
    ax.set_yticks(range(n1), [f'{c} ({s})' for c, s in size1.items()], fontsize=7)
    ax.set_xticks(range(n2), [f'{c} ({s})' for c, s in size2.items()], fontsize=7, rotation=90)
    ax.set_ylabel(f'{job1} class (size)')
    ax.set_xlabel(f'{job2} class (size)')
    ax.set_title(f'{job1} vs {job2}: {_TITLES[kind]}')
    if annotate if annotate is not None else matrix.size <= 400:
        top = matrix.max() if matrix.size else 0
        for (i, k), v in np.ndenumerate(matrix):
            text = f'{int(v)}' if kind == 'counts' else f'{v:.2f}'
            ax.text(k, i, text, ha='center', va='center', fontsize=6,
                    color='black' if top and v > 0.6 * top else 'white')
    fig.tight_layout()
    return fig


def sankey_figures(result):
    """Sankey layout of all jobs in order, and its figures in counts and in fractions.

    Returns
    -------
    nodes, links : pandas.DataFrame
    figures : dict
        ``'counts'`` / ``'fractions'`` -> Figure.
    """
    names = result.names
    sizes = {n: result.sizes(n).to_numpy() for n in names}
    nodes, links = sankey_layout(names, result.classes, sizes, result.count_matrix)
    return nodes, links, {v: sankey_figure(nodes, links, v) for v in ('counts', 'fractions')}


def convergence_figure(history, job=''):
    """Class changes, class distribution and per-class resolution over iterations.

    Parameters
    ----------
    history : pandas.DataFrame
        From :func:`~scipion_reciprocal.core.relion_jobs.read_job_history`.
    job : str
        Name for the title.
    """
    fig = _figure(14, 4)
    axes = fig.subplots(1, 3)

    def series(quantity):
        table = history[history['quantity'] == quantity]
        if quantity.startswith('changes_'):
            table = table[table['value'] < 999]     # RELION's placeholder before iteration 1
        return table.pivot_table(index='iteration', columns='class', values='value')

    changes = series('changes_optimal_classes')
    ax = axes[0]
    if not changes.empty:
        ax.plot(changes.index, changes.iloc[:, 0], 'o-', label='classes (fraction)', color='C0')
    ax.set_xlabel('iteration')
    ax.set_ylabel('changes of optimal class')
    other = ax.twinx()
    for i, (quantity, label) in enumerate((('changes_optimal_orientations', 'orientations (deg)'),
                                           ('changes_optimal_offsets', 'offsets'))):
        table = series(quantity)
        if not table.empty:
            other.plot(table.index, table.iloc[:, 0], 's--', color=f'C{i + 1}', label=label)
    other.set_ylabel('orientation / offset changes')
    handles = ax.get_legend_handles_labels()[0] + other.get_legend_handles_labels()[0]
    if handles:
        ax.legend(handles, [h.get_label() for h in handles], fontsize=7)
    ax.set_title('convergence')
    for ax, quantity, label in ((axes[1], 'class_distribution', 'class distribution'),
                                (axes[2], 'estimated_resolution', 'estimated resolution (A)')):
        table = series(quantity)
        for cls in table.columns:
            ax.plot(table.index, table[cls], '-', label=f'class {cls}', linewidth=1)
        ax.set_xlabel('iteration')
        ax.set_ylabel(label)
        ax.set_title(label)
        if 0 < len(table.columns) <= 12:
            ax.legend(fontsize=6, ncol=2)
    fig.suptitle(f'{job} per iteration' if job else 'per iteration')
    fig.tight_layout()
    return fig


def _class_images(maps):
    """Per class: list of (plane label, 2D image), reading maps or 2D stack images."""
    images = []
    for row in maps.to_dict('records'):
        if not row['exists']:
            images.append(None)
        elif row['index']:
            images.append([('', read_images(row['path'], [row['index']])[0])])
        else:
            volume, _ = read_map(row['path'])
            z, y, x = (s // 2 for s in volume.shape)
            images.append([('XY', volume[z]), ('XZ', volume[:, y, :]), ('YZ', volume[:, :, x])])
    return images


def class_slices_figure(maps, job=''):
    """Central slices (XY, XZ, YZ) of every class map of a job, largest class first.

    Parameters
    ----------
    maps : pandas.DataFrame
        From :func:`~scipion_reciprocal.core.relion_jobs.class_maps` (2D class averages are
        shown as one image per class).
    """
    maps = maps.sort_values('distribution', ascending=False, kind='stable')
    images = _class_images(maps)
    n_rows = max((len(i) for i in images if i), default=1)
    n = len(maps)
    fig = _figure(max(2.0, 1.6 * n), 1.7 * n_rows + 0.6)
    axes = np.atleast_2d(fig.subplots(n_rows, max(n, 1), squeeze=False))
    for col, (row, planes) in enumerate(zip(maps.to_dict('records'), images)):
        for r in range(n_rows):
            ax = axes[r, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if planes is None or r >= len(planes):
                ax.text(0.5, 0.5, 'no map' if planes is None else '', ha='center', va='center',
                        transform=ax.transAxes, fontsize=7)
                continue
            label, image = planes[r]
            ax.imshow(image, cmap='gray', origin='lower')
            if col == 0 and label:
                ax.set_ylabel(label)
        axes[0, col].set_title(f'class {row["class"]}\n{100 * row["distribution"]:.1f}%',
                               fontsize=8)
    fig.suptitle(f'{job} class maps, central slices (sorted by class distribution)', fontsize=9)
    fig.tight_layout()
    return fig


def agreement_figure(result):
    """Adjusted Rand index and normalised mutual information of every job pair, as a table
    and as a matrix."""
    names = result.names
    n = len(names)
    ari = np.eye(n)
    nmi = np.eye(n)
    for row in result.agreement.itertuples():
        i, k = names.index(row.job1), names.index(row.job2)
        ari[i, k] = ari[k, i] = row.adjusted_rand
        nmi[i, k] = nmi[k, i] = row.normalized_mutual_info
    fig = _figure(6 + 1.0 * n, 2.5 + 0.5 * max(n, len(result.agreement)) ** 0.5 * 1.5)
    ax_table, ax_matrix = fig.subplots(1, 2, gridspec_kw={'width_ratios': [1.3, 1]})
    ax_table.axis('off')
    cells = [[r.job1, r.job2, f'{r.particles}', f'{r.adjusted_rand:.3f}',
              f'{r.normalized_mutual_info:.3f}'] for r in result.agreement.itertuples()]
    table = ax_table.table(cellText=cells, colLabels=['job 1', 'job 2', 'particles', 'ARI', 'NMI'],
                           loc='center')
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    combined = np.triu(ari, 1) + np.tril(nmi, -1) + np.eye(n)
    image = ax_matrix.imshow(combined, vmin=0, vmax=1, cmap='viridis')
    ax_matrix.set_xticks(range(n), names, rotation=90, fontsize=8)
    ax_matrix.set_yticks(range(n), names, fontsize=8)
    for (i, k), v in np.ndenumerate(combined):
        if i != k:
            ax_matrix.text(k, i, f'{v:.2f}', ha='center', va='center', fontsize=7,
                           color='black' if v > 0.6 else 'white')
    ax_matrix.set_title('ARI (upper) / NMI (lower)', fontsize=9)
    fig.colorbar(image, ax=ax_matrix, shrink=0.8)
    fig.tight_layout()
    return fig


def save_plots(result, out, histories=None, maps=None, which='all', processes=0):
    """Write the figures of an analysis and return their paths.

    Parameters
    ----------
    result : ReciprocalResult
    out : ResultFolder or path
        Figures go to ``plots/`` in it, each under a temporary name first (and recorded,
        when ``out`` is a ResultFolder).
    histories, maps : dict, optional
        Job name -> history table (convergence plots) / class map table (slice montages).
    which : {'all', 'summary', 'none'}
        See :data:`~.background.PLOT_CHOICES`.
    processes : int
        Draw in that many forked processes (0: in this one).

    With ``result.verdict`` set, the verdict's figures too (:mod:`.verdict`).
    """
    from .background import start_plots
    return start_plots(result, out, lambda: (histories, maps), which, processes).wait()


def figure_entries(result, which, inputs):
    """Callables that each write some figures (given the result folder's ``root``) and
    return their relative paths, in drawing order; ``which`` as in :func:`save_plots`,
    ``inputs`` returns (histories, maps)."""
    if which == 'none':
        return []

    def save(root, name, write):
        rel = f'{PLOTS_DIR}/{name}'
        final = root / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(final) as tmp:
            write(tmp)
            journal_line(root, rel)     # drawn in another process: journal before rename
        return rel

    def figure(name, factory, *args):
        return lambda root: [save(root, name, lambda tmp: factory(*args).savefig(
            tmp, dpi=100, format='png'))]

    def sankey(root):
        nodes, links, figures = sankey_figures(result)
        return [save(root, SANKEY_PNG.format(values=values),
                     lambda tmp, fig=fig: fig.savefig(tmp, dpi=100, format='png'))
                for values, fig in figures.items()] + \
            [save(root, SANKEY_HTML, lambda tmp: sankey_html(tmp, nodes, links))]

    def per_job(root):
        histories, maps = inputs()
        writes = [figure(CONVERGENCE_PNG.format(job=job), convergence_figure, history, job)
                  for job, history in (histories or {}).items()
                  if history is not None and len(history)]
        writes += [figure(SLICES_PNG.format(job=job), class_slices_figure, table, job)
                   for job, table in (maps or {}).items()
                   if table is not None and len(table) and table['exists'].any()]
        return [rel for write in writes for rel in write(root)]

    entries = [sankey, figure(AGREEMENT_PNG, agreement_figure, result), per_job]
    if result.verdict is not None:
        entries += [figure(name, function, result) for function, name in VERDICT_FIGURES]
    if which == 'all':
        names = result.names
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                for kind, j1, j2 in (('counts', a, b), ('fractions', a, b), ('jaccard', a, b),
                                     ('fractions', b, a)):
                    entries.append(figure(HEATMAP_PNG.format(kind=kind, job1=j1, job2=j2),
                                          heatmap_figure, result, kind, j1, j2))
    return entries
