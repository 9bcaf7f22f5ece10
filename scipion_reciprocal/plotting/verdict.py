"""Figures of the consensus verdict (Agg canvas, no pyplot state).

Each function takes a :class:`~scipion_reciprocal.core.reciprocal_tables.ReciprocalResult`
whose ``verdict`` is set and returns a ``matplotlib.figure.Figure``:
:func:`enrichment_figure` (observed/expected for every run pair, significance marked),
:func:`dendrogram_figure` (merging of the significant groups with its cut),
:func:`stability_figure` (particle stability with the threshold) and
:func:`sankey_groups_figure` (the Sankey diagram with bands coloured by merged group).
"""

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from scipy.cluster.hierarchy import dendrogram

from .sankey import sankey_figure, sankey_layout

__all__ = ['enrichment_figure', 'dendrogram_figure', 'stability_figure',
           'sankey_groups_figure', 'merged_colours', 'ENRICHMENT_PNG', 'DENDROGRAM_PNG',
           'STABILITY_PNG', 'SANKEY_GROUPS_PNG', 'VERDICT_FIGURES', 'save_verdict_plots']

ENRICHMENT_PNG = 'enrichment.png'
DENDROGRAM_PNG = 'merge_dendrogram.png'
STABILITY_PNG = 'stability.png'
SANKEY_GROUPS_PNG = 'sankey_groups.png'
#: Colour of particles in no merged group.
NO_GROUP = '#bbbbbb'
#: Largest |log2 enrichment| on the colour scale.
LOG2_RANGE = 4.0


def _figure(width, height):
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def merged_colours(n_merged):
    """Colour of each merged group: index 0 (no group) grey, then tab10/tab20 colours."""
    palette = colormaps['tab10' if n_merged <= 10 else 'tab20'].colors
    return [NO_GROUP] + [to_hex(palette[i % len(palette)]) for i in range(n_merged)]


def enrichment_figure(result):
    """log2(observed / expected) of every class pair of every run pair; ``*`` marks a
    significant intersection, a black frame a reproduced pair."""
    verdict = result.verdict
    names = result.names
    numbers = dict(zip(result.jobs['job'], result.jobs['number']))
    alpha = verdict.summary['parameters']['alpha']
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    n_cols = min(len(pairs), 3)
    n_rows = -(-len(pairs) // n_cols)
    k = max(len(c) for c in result.classes.values())
    side = min(2.2 + 0.32 * k, 9.0)
    fig = _figure(n_cols * side + 1.2, n_rows * side + 0.8)
    fig.set_layout_engine('constrained')   # titles, axis labels and colour bar never overlap
    axes = np.atleast_1d(fig.subplots(n_rows, n_cols, squeeze=False).ravel())
    table = verdict.significance
    image = None
    for ax, (a, b) in zip(axes, pairs):
        cells = table[(table['job1'] == numbers[a]) & (table['job2'] == numbers[b])]
        shape = (len(result.classes[a]), len(result.classes[b]))
        enrichment = cells['enrichment'].to_numpy(dtype=np.float64).reshape(shape)
        with np.errstate(divide='ignore', invalid='ignore'):
            log2 = np.clip(np.log2(enrichment), -LOG2_RANGE, LOG2_RANGE)
        log2[~np.isfinite(log2) & (enrichment == 0)] = -LOG2_RANGE
        significant = (cells['q_value'].to_numpy() <= alpha).reshape(shape)
        image = ax.imshow(np.ma.masked_invalid(log2), cmap='RdBu_r', vmin=-LOG2_RANGE,
                          vmax=LOG2_RANGE, aspect='auto', interpolation='nearest')
        reproduced = verdict.reproduced[(a, b)]
        if shape[0] * shape[1] <= 900:
            for i, j in zip(*np.nonzero(significant)):
                ax.text(j, i, '*', ha='center', va='center', fontsize=9, color='black')
        for i, j in zip(*np.nonzero(reproduced)):
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor='black',
                                   linewidth=1.6))
        fontsize = 7 if max(shape) <= 30 else 4
        ax.set_yticks(range(shape[0]), [str(c) for c in result.classes[a]], fontsize=fontsize)
        ax.set_xticks(range(shape[1]), [str(c) for c in result.classes[b]], fontsize=fontsize,
                      rotation=90)
        ax.set_ylabel(f'{a} class')
        ax.set_xlabel(f'{b} class')
        ax.set_title(f'{a} vs {b}', fontsize=9)
    for ax in axes[len(pairs):]:
        ax.axis('off')
    if image is not None:
        fig.colorbar(image, ax=list(axes[:len(pairs)]), shrink=0.8,
                     label='log2 enrichment (observed / expected)')
    fig.suptitle(f'Enrichment of class intersections\n* q <= {alpha:g} (Benjamini-Hochberg); '
                 f'framed: reproduced pair', fontsize=10)
    return fig


def dendrogram_figure(result):
    """Average-linkage merging of the significant consensus groups with the suggested cut;
    leaves coloured by merged group, reproducible states starred."""
    verdict = result.verdict
    merge = verdict.merge
    groups = verdict.groups.set_index('group')
    labels = [f'{"* " if groups.loc[g, "reproducible"] else ""}group {g} '
              f'({result.consensus.loc[result.consensus["group"] == g, "size"].iloc[0]})'
              for g in verdict.merge_groups]
    n = len(labels)
    fig = _figure(8.0, max(3.0, 1.2 + 0.28 * n))
    ax = fig.add_subplot(111)
    colours = merged_colours(merge.n_merged)
    if n < 2:
        message = 'no significant consensus group' if n == 0 else \
            f'one significant consensus group: {labels[0]}'
        ax.text(0.5, 0.5, message + ' (nothing to merge)', ha='center', va='center')
        ax.axis('off')
    else:
        leaf_colour = {i: colours[label] for i, label in enumerate(merge.labels)}
        tree = dendrogram(merge.linkage, orientation='left', labels=labels, ax=ax,
                          color_threshold=0, above_threshold_color='#555555',
                          leaf_font_size=7)
        for tick, leaf in zip(ax.get_yticklabels(), tree['leaves']):
            tick.set_color(leaf_colour[leaf])
        ax.axvline(merge.cut, color='red', linestyle='--', linewidth=1)
        ax.text(merge.cut, 1.01, f' cut {merge.cut:.2f}', color='red', fontsize=8,
                transform=ax.get_xaxis_transform())
        ax.set_xlim(max(1.0, float(merge.linkage[:, 2].max()) * 1.05), 0)
        ax.set_xlabel('distance (1 - mean class similarity)')
    how = 'largest gap' if merge.criterion.startswith('largest gap') else merge.criterion
    ax.set_title(f'{merge.n_merged} merged groups of {n} significant consensus groups (cut: '
                 f'{how}); * reproducible state', fontsize=9)
    fig.tight_layout()
    return fig


def stability_figure(result):
    """Particles per stability value, with the threshold and the stable fraction."""
    verdict = result.verdict
    threshold = verdict.summary['parameters']['stability_threshold']
    values, counts = np.unique(np.round(verdict.stability, 9), return_counts=True)
    n_pairs = len(result.names) * (len(result.names) - 1) // 2
    fig = _figure(7.0, 4.0)
    ax = fig.add_subplot(111)
    width = 0.8 / max(n_pairs, 1)
    colours = ['#2ca02c' if v >= threshold - 1e-12 else '#d62728' for v in values]
    ax.bar(values, counts, width=width, color=colours, edgecolor='black', linewidth=0.5)
    ax.axvline(threshold, color='black', linestyle='--', linewidth=1)
    ax.text(threshold, 0.97, f' threshold {threshold:g}', fontsize=8, va='top',
            transform=ax.get_xaxis_transform())
    ax.set_xlim(-0.5 / max(n_pairs, 1) - 0.02, 1.02 + 0.5 / max(n_pairs, 1))
    ax.set_xlabel(f'stability (fraction of the {n_pairs} run pairs with reproduced classes)')
    ax.set_ylabel('particles')
    summary = verdict.summary
    ax.set_title(f'{summary["stable_particles"]} stable ({100 * summary["stable_fraction"]:.1f}%),'
                 f' {summary["unstable_particles"]} unstable\n(green: at least the threshold; '
                 f'stable also needs a significant group)', fontsize=8)
    fig.tight_layout()
    return fig


def sankey_groups_figure(result):
    """The Sankey diagram of all jobs with every band split and coloured by the merged group
    of its particles (grey: in no merged group)."""
    verdict = result.verdict
    names = result.names
    consensus = result.consensus
    merged = verdict.groups['merged'].to_numpy()
    sizes = consensus['size'].to_numpy(dtype=np.float64)
    index = {n: np.searchsorted(result.classes[n], consensus[f'class_{n}'].to_numpy())
             for n in names}
    n_groups = verdict.merge.n_merged + 1

    def band_counts(a, b):
        out = np.zeros((len(result.classes[a]), len(result.classes[b]), n_groups))
        np.add.at(out, (index[a], index[b], merged), sizes)
        return out

    nodes, links = sankey_layout(names, result.classes,
                                 {n: result.sizes(n).to_numpy() for n in names},
                                 result.count_matrix, band_counts=band_counts,
                                 band_colours=merged_colours(verdict.merge.n_merged))
    return sankey_figure(nodes, links, 'counts',
                         title=f'Particles by merged consensus group ({verdict.sentence}; '
                               f'grey: in no merged group)')


#: The verdict's figures: (function of the result, file name), drawn by
#: :func:`.reciprocal.save_plots`.
VERDICT_FIGURES = ((enrichment_figure, ENRICHMENT_PNG), (dendrogram_figure, DENDROGRAM_PNG),
                   (stability_figure, STABILITY_PNG), (sankey_groups_figure, SANKEY_GROUPS_PNG))


def save_verdict_plots(result, out, folder):
    """Write the verdict's figures into ``folder`` of the ResultFolder ``out``; returns their
    paths."""
    return [out.save_figure(f'{folder}/{name}', function(result), dpi=100)
            for function, name in VERDICT_FIGURES]
