"""Figures of an imported classification, drawn from the tables of
:mod:`scipion_reciprocal.core.class_summary` (Agg canvas, no pyplot state): class sizes,
the posterior of the assigned class per class, and the class maps (central slices) or 2D
class averages. :func:`save_class_summary` writes the tables and the figures of one job.
"""
import numpy as np
import pandas as pd

from ..formats.mrc import read_images
from ..formats.result_folder import as_result_folder
from .reciprocal import _figure, class_slices_figure

__all__ = ['class_sizes_figure', 'confidence_figure', 'class_averages_figure',
           'save_class_summary', 'SIZES_CSV', 'CONFIDENCE_CSV', 'MAPS_CSV', 'SIZES_PNG',
           'CONFIDENCE_PNG', 'SLICES_PNG', 'AVERAGES_PNG', 'PLOTS_DIR']

SIZES_CSV = 'class_sizes_{job}.csv'
CONFIDENCE_CSV = 'confidence_{job}.csv'
MAPS_CSV = 'class_maps_{job}.csv'
PLOTS_DIR = 'plots'
SIZES_PNG = 'class_sizes_{job}.png'
CONFIDENCE_PNG = 'confidence_{job}.png'
SLICES_PNG = 'class_slices_{job}.png'
AVERAGES_PNG = 'class_averages_{job}.png'
#: Up to this many classes the posterior histograms are drawn as lines, one per class;
#: more classes (2D classifications) as one image, a row per class.
MAX_LINES = 12


def class_sizes_figure(sizes, job=''):
    """Bars of the particles per class (:func:`~..core.class_summary.class_sizes`), with
    each class's share and, when known, its mean posterior."""
    n = len(sizes)
    fig = _figure(min(max(4.0, 0.45 * n + 1.5), 16.0), 3.6)
    ax = fig.subplots()
    bars = ax.bar(np.arange(n), sizes['size'].to_numpy(), color='tab:blue')
    ax.set_xticks(np.arange(n), [str(c) for c in sizes['class']],
                  fontsize=8 if n <= 30 else 5, rotation=0 if n <= 30 else 90)
    ax.set_xlabel('class')
    ax.set_ylabel('particles')
    if n <= 30:
        labels = [f'{f:.0%}' if np.isnan(m) else f'{f:.0%}\n{m:.2f}'
                  for f, m in zip(sizes['fraction'], sizes['mean_confidence'])]
        ax.bar_label(bars, labels, fontsize=7)
        ax.margins(y=0.2)
    known = sizes['mean_confidence'].notna().any()
    ax.set_title(f'{job}: {int(sizes["size"].sum())} particles in {n} classes'
                 + ('\nabove the bars: share of particles / mean posterior' if known and n <= 30
                    else ''),
                 fontsize=9)
    fig.tight_layout()
    return fig


def confidence_figure(histogram, job=''):
    """The posterior of every particle's class, per class
    (:func:`~..core.class_summary.confidence_histogram`): a line per class, or with many
    classes an image with a row per class (share of the class in each bin)."""
    classes = pd.unique(histogram['class'])
    edges = np.append(histogram['bin_start'].iloc[0:1], histogram.loc[
        histogram['class'] == classes[0], 'bin_end'].to_numpy())
    counts = histogram['count'].to_numpy().reshape(len(classes), -1)
    if len(classes) <= MAX_LINES:
        fig = _figure(6.0, 3.6)
        ax = fig.subplots()
        for cls, row in zip(classes, counts):
            ax.stairs(row, edges, label=f'class {cls}', linewidth=1.5)
        ax.set_ylabel('particles')
        ax.legend(fontsize=7, ncol=2)
    else:
        fig = _figure(6.0, min(2.0 + 0.12 * len(classes), 14.0))
        ax = fig.subplots()
        totals = np.maximum(counts.sum(axis=1, keepdims=True), 1)
        image = ax.imshow(counts / totals, aspect='auto', cmap='viridis', origin='lower',
                          extent=(edges[0], edges[-1], -0.5, len(classes) - 0.5),
                          interpolation='nearest')
        step = max(1, len(classes) // 30)
        ax.set_yticks(np.arange(0, len(classes), step),
                      [str(c) for c in classes[::step]], fontsize=6)
        ax.set_ylabel('class')
        fig.colorbar(image, ax=ax, label='share of the class')
    ax.set_xlabel('posterior of the assigned class')
    ax.set_xlim(edges[0], edges[-1])
    ax.set_title(f'{job}: how sure each class assignment is', fontsize=9)
    fig.tight_layout()
    return fig


def class_averages_figure(maps, job='', columns=10):
    """2D class averages (images of stacks, a :func:`~..core.class_summary.class_map_table`)
    in rows of ``columns``, largest class first, each titled with its class and share."""
    maps = maps[maps['exists']].sort_values('distribution', ascending=False, kind='stable')
    n = len(maps)
    columns = max(1, min(columns, n))
    rows = max(1, -(-n // columns))
    fig = _figure(1.3 * columns + 0.2, 1.45 * rows + 0.5)
    axes = np.atleast_2d(fig.subplots(rows, columns, squeeze=False))
    images = {}
    for path, group in maps.groupby(maps['path'].astype(str), sort=False):
        images.update(zip(group.index, read_images(path, group['index'].to_numpy())))
    for ax, (label, row) in zip(axes.ravel(), maps.iterrows()):
        ax.imshow(images[label], cmap='gray', origin='lower')
        ax.set_title(f'{row["class"]}: {100 * row["distribution"]:.1f}%', fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        if not ax.images:
            ax.set_axis_off()
    fig.suptitle(f'{job} class averages (largest class first)', fontsize=9)
    fig.tight_layout()
    return fig


def save_class_summary(out, job, sizes, histogram=None, maps=None):
    """Write the tables of one imported classification and the figures drawn from them.

    Parameters
    ----------
    out : ResultFolder or path
    job : str
        Name in file names and titles.
    sizes, histogram, maps : pandas.DataFrame
        :func:`~..core.class_summary.class_sizes`, ``confidence_histogram`` (None without
        posteriors), ``class_map_table`` (None or no existing file: no map figure).

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    out = as_result_folder(out)
    written = [out.write_csv(SIZES_CSV.format(job=job), sizes, index=False)]
    figures = [(SIZES_PNG, class_sizes_figure(sizes, job))]
    if histogram is not None:
        written.append(out.write_csv(CONFIDENCE_CSV.format(job=job), histogram, index=False))
        figures.append((CONFIDENCE_PNG, confidence_figure(histogram, job)))
    if maps is not None and len(maps):
        written.append(out.write_csv(MAPS_CSV.format(job=job), maps, index=False))
        if maps['exists'].any():
            averages = (maps.loc[maps['exists'], 'index'] > 0).all()
            figures.append((AVERAGES_PNG, class_averages_figure(maps, job)) if averages
                           else (SLICES_PNG, class_slices_figure(maps, job)))
    for name, fig in figures:
        written.append(out.save_figure(f'{PLOTS_DIR}/{name.format(job=job)}', fig, dpi=100))
    return written
