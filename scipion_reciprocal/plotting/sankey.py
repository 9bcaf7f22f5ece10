"""Sankey (alluvial) diagrams of classifications: one column of classes per job, node height
= class size, bands = particles shared by classes of consecutive jobs.

:func:`sankey_layout` computes the geometry once from count matrices; :func:`sankey_figure`
draws it with matplotlib and :func:`sankey_html` writes it as a self-contained HTML page
(inline SVG, hover tooltips and highlighting, a counts/fractions switch; no network).
"""

import html
import json

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.patches import PathPatch, Rectangle
from matplotlib.path import Path as MplPath

from ..formats._atomic import atomic_path

__all__ = ['sankey_layout', 'sankey_figure', 'sankey_html', 'script_json']

NODE_WIDTH = 0.06
GAP = 0.015


def sankey_layout(names, classes, sizes, counts, band_counts=None, band_colours=None):
    """Positions of nodes and bands.

    Parameters
    ----------
    names : list of str
        Jobs, left to right.
    classes : dict
        Job -> class numbers.
    sizes : dict
        Job -> class sizes (same order as ``classes``).
    counts : callable
        ``counts(a, b)`` -> count matrix (classes of a x classes of b) of consecutive jobs.
    band_counts : callable, optional
        ``band_counts(a, b)`` -> (classes of a, classes of b, groups) counts: every band is
        split by group (e.g. merged consensus group, 0 for none) and coloured by
        ``band_colours[group]``; nodes are then grey.
    band_colours : list of str, optional

    Returns
    -------
    nodes : pandas.DataFrame
        ``job``, ``column``, ``class``, ``size``, ``fraction``, ``x``, ``y0``, ``y1``,
        ``colour`` (y grows downwards, total height 1 for the largest column).
    links : pandas.DataFrame
        ``job1``, ``class1``, ``job2``, ``class2``, ``count``, ``fraction1`` (of class1),
        ``fraction2`` (of class2), ``x0``, ``x1``, ``ya0``, ``ya1`` (left edge), ``yb0``,
        ``yb1`` (right edge), ``colour``, ``group`` (0 without ``band_counts``).
    """
    palette = colormaps['tab20'].colors
    total = max(max(float(np.sum(sizes[n])) for n in names), 1.0)
    max_k = max(int(np.count_nonzero(sizes[n])) for n in names)
    scale = 1.0 / (1.0 + GAP * max(max_k - 1, 0))
    node_rows, order_prev, colour_prev = [], None, None     # colours by class index
    placed = {}
    for col, name in enumerate(names):
        size = np.asarray(sizes[name], dtype=float)
        k = len(size)
        if order_prev is None:
            order = np.arange(k)
            colours = [to_hex(palette[i % len(palette)]) for i in range(k)]
        else:
            flow = np.asarray(counts(names[col - 1], name), dtype=float)
            prev = placed[names[col - 1]]
            centre = (prev['y0'] + prev['y1']) / 2.0
            weight = flow.sum(axis=0)
            bary = np.where(weight > 0, (flow * centre[:, None]).sum(axis=0) /
                            np.maximum(weight, 1), np.inf)
            order = np.lexsort((np.arange(k), bary))
            dominant = np.argmax(flow, axis=0)
            colours = [colour_prev[d] if weight[i] > 0 else '#bbbbbb'
                       for i, d in enumerate(dominant)]
        if band_counts is not None:
            colours = ['#d9d9d9'] * k
        y0 = np.zeros(k)
        cursor = 0.0
        for i in order:
            if size[i] > 0:     # empty classes get no node
                y0[i] = cursor
                cursor += size[i] / total * scale + GAP * scale
        y1 = y0 + size / total * scale
        placed[name] = {'y0': y0, 'y1': y1}
        for i in np.flatnonzero(size > 0):
            node_rows.append((name, col, int(classes[name][i]), int(size[i]),
                              size[i] / max(size.sum(), 1), float(col), y0[i], y1[i], colours[i]))
        order_prev, colour_prev = order, colours
    nodes = pd.DataFrame(node_rows, columns=['job', 'column', 'class', 'size', 'fraction', 'x',
                                             'y0', 'y1', 'colour'])
    link_rows = []
    for col, (a, b) in enumerate(zip(names[:-1], names[1:])):
        if band_counts is None:
            flow = np.asarray(counts(a, b), dtype=float)[:, :, None]
        else:
            flow = np.asarray(band_counts(a, b), dtype=float)
        pa, pb = placed[a], placed[b]
        colours_a = dict(zip(nodes[nodes['job'] == a]['class'], nodes[nodes['job'] == a]['colour']))
        out_cursor = pa['y0'].copy()
        in_cursor = pb['y0'].copy()
        sa, sb = np.asarray(sizes[a], dtype=float), np.asarray(sizes[b], dtype=float)
        targets = np.argsort(pb['y0'], kind='stable')
        sources = np.argsort(pa['y0'], kind='stable')
        groups = range(flow.shape[2])
        left_edge = {}
        for i in sources:
            for k in targets:
                for g in groups:
                    if flow[i, k, g] > 0:
                        h = flow[i, k, g] / total * scale
                        left_edge[(i, k, g)] = (out_cursor[i], out_cursor[i] + h)
                        out_cursor[i] += h
        for k in targets:
            for i in sources:
                for g in groups:
                    if flow[i, k, g] > 0:
                        h = flow[i, k, g] / total * scale
                        ya0, ya1 = left_edge[(i, k, g)]
                        colour = colours_a[int(classes[a][i])] if band_counts is None \
                            else band_colours[g]
                        link_rows.append((a, int(classes[a][i]), b, int(classes[b][k]),
                                          int(flow[i, k, g]), flow[i, k, g] / max(sa[i], 1),
                                          flow[i, k, g] / max(sb[k], 1), col + NODE_WIDTH,
                                          col + 1.0, ya0, ya1, in_cursor[k], in_cursor[k] + h,
                                          colour, g))
                        in_cursor[k] += h
    links = pd.DataFrame(link_rows, columns=['job1', 'class1', 'job2', 'class2', 'count',
                                             'fraction1', 'fraction2', 'x0', 'x1', 'ya0', 'ya1',
                                             'yb0', 'yb1', 'colour', 'group'])
    return nodes, links


def _band(x0, x1, ya0, ya1, yb0, yb1):
    """Vertices and codes of a band between two vertical edges (cubic curves)."""
    xm = (x0 + x1) / 2.0
    verts = [(x0, ya0), (xm, ya0), (xm, yb0), (x1, yb0), (x1, yb1), (xm, yb1), (xm, ya1),
             (x0, ya1), (x0, ya0)]
    codes = [MplPath.MOVETO, MplPath.CURVE4, MplPath.CURVE4, MplPath.CURVE4, MplPath.LINETO,
             MplPath.CURVE4, MplPath.CURVE4, MplPath.CURVE4, MplPath.CLOSEPOLY]
    return verts, codes


def _node_label(node, values):
    if values == 'fractions':
        return f'{node["class"]} ({100.0 * node["fraction"]:.1f}%)'
    return f'{node["class"]} ({node["size"]})'


def sankey_figure(nodes, links, values='counts', title=None, min_label_height=0.012):
    """Draw a Sankey layout.

    Parameters
    ----------
    nodes, links : pandas.DataFrame
        From :func:`sankey_layout`.
    values : {'counts', 'fractions'}
        Node labels give class sizes, or fractions of the job's particles.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    n_cols = int(nodes['column'].max()) + 1 if len(nodes) else 1
    fig = Figure(figsize=(max(6.0, 2.6 * n_cols), 7.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes([0.03, 0.03, 0.94, 0.89])
    for link in links.itertuples():
        verts, codes = _band(link.x0, link.x1, link.ya0, link.ya1, link.yb0, link.yb1)
        ax.add_patch(PathPatch(MplPath(verts, codes), facecolor=link.colour, alpha=0.45,
                               edgecolor='none'))
    for node in nodes.to_dict('records'):
        ax.add_patch(Rectangle((node['x'], node['y0']), NODE_WIDTH, node['y1'] - node['y0'],
                               facecolor=node['colour'], edgecolor='black', linewidth=0.5))
        if node['y1'] - node['y0'] >= min_label_height:
            ax.text(node['x'] + NODE_WIDTH + 0.01, (node['y0'] + node['y1']) / 2,
                    _node_label(node, values), va='center', fontsize=7)
    for col, name in enumerate(pd.unique(nodes['job'])):
        ax.text(col + NODE_WIDTH / 2, -0.03, name, ha='center', va='bottom', fontsize=10,
                fontweight='bold')
    ax.set_xlim(-0.1, n_cols - 1 + 0.45)
    ax.set_ylim(max(nodes['y1'].max() if len(nodes) else 1.0, 1.0) + 0.02, -0.06)
    ax.axis('off')
    fig.suptitle(title or f'Particles shared by classes of consecutive jobs ({values})')
    return fig


def _svg(nodes, links, values, width, height, margin):
    n_cols = int(nodes['column'].max()) + 1 if len(nodes) else 1
    span_x = n_cols - 1 + NODE_WIDTH + 0.35
    sx = (width - 2 * margin) / span_x
    sy = (height - 2 * margin) / max(float(nodes['y1'].max()) if len(nodes) else 1.0, 1.0)

    def px(x):
        return margin + x * sx

    def py(y):
        return margin + y * sy

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'class="sankey" data-values="{values}">']
    for link in links.itertuples():
        x0, x1, xm = px(link.x0), px(link.x1), (px(link.x0) + px(link.x1)) / 2
        d = (f'M{x0:.1f},{py(link.ya0):.1f} C{xm:.1f},{py(link.ya0):.1f} {xm:.1f},'
             f'{py(link.yb0):.1f} {x1:.1f},{py(link.yb0):.1f} L{x1:.1f},{py(link.yb1):.1f} '
             f'C{xm:.1f},{py(link.yb1):.1f} {xm:.1f},{py(link.ya1):.1f} {x0:.1f},'
             f'{py(link.ya1):.1f} Z')
        tip = (f'{link.job1} class {link.class1} -> {link.job2} class {link.class2}: '
               f'{link.count} particles ({100 * link.fraction1:.1f}% of {link.job1} class '
               f'{link.class1}, {100 * link.fraction2:.1f}% of {link.job2} class {link.class2})')
        parts.append(f'<path class="link" d="{d}" fill="{link.colour}" fill-opacity="0.45" '
                     f'data-a="{html.escape(link.job1)}:{link.class1}" '
                     f'data-b="{html.escape(link.job2)}:{link.class2}">'
                     f'<title>{html.escape(tip)}</title></path>')
    for node in nodes.to_dict('records'):
        y0, y1 = py(node['y0']), py(node['y1'])
        tip = (f'{node["job"]} class {node["class"]}: {node["size"]} particles '
               f'({100.0 * node["fraction"]:.1f}%)')
        key = f'{html.escape(node["job"])}:{node["class"]}'
        parts.append(f'<rect class="node" x="{px(node["x"]):.1f}" y="{y0:.1f}" '
                     f'width="{NODE_WIDTH * sx:.1f}" height="{max(y1 - y0, 0.5):.1f}" '
                     f'fill="{node["colour"]}" stroke="#000" stroke-width="0.5" '
                     f'data-key="{key}"><title>{html.escape(tip)}</title></rect>')
        if y1 - y0 >= 9:
            parts.append(f'<text x="{px(node["x"] + NODE_WIDTH) + 4:.1f}" '
                         f'y="{(y0 + y1) / 2 + 4:.1f}" font-size="11">'
                         f'{html.escape(_node_label(node, values))}</text>')
    for col, name in enumerate(pd.unique(nodes['job'])):
        parts.append(f'<text x="{px(col + NODE_WIDTH / 2):.1f}" y="{margin - 12}" '
                     f'text-anchor="middle" font-weight="bold">{html.escape(name)}</text>')
    parts.append('</svg>')
    return '\n'.join(parts)


_SCRIPT = """
function show(which) {
  for (const el of document.querySelectorAll('.view')) {
    el.style.display = el.id === which ? 'block' : 'none';
  }
}
for (const svg of document.querySelectorAll('svg.sankey')) {
  svg.addEventListener('mouseover', (e) => {
    const t = e.target;
    const key = t.dataset.key;
    if (!key && !t.dataset.a) return;
    for (const p of svg.querySelectorAll('path.link')) {
      const on = key ? (p.dataset.a === key || p.dataset.b === key) : p === t;
      p.setAttribute('fill-opacity', on ? '0.85' : '0.12');
    }
  });
  svg.addEventListener('mouseout', () => {
    for (const p of svg.querySelectorAll('path.link')) p.setAttribute('fill-opacity', '0.45');
  });
}
show('counts');
"""


def sankey_html(path, nodes, links, title='Reciprocal analysis: Sankey diagram', width=None,
                height=720):
    """Write a self-contained interactive HTML page of a Sankey layout.

    Hovering a class highlights its bands; every node and band has a tooltip with counts
    and fractions; two buttons switch the labels between counts and fractions. The page
    loads nothing from the network.

    Parameters
    ----------
    path : path
    nodes, links : pandas.DataFrame
        From :func:`sankey_layout`.
    """
    n_cols = int(nodes['column'].max()) + 1 if len(nodes) else 1
    width = width or max(700, 300 * n_cols)
    views = ''.join(f'<div class="view" id="{v}">{_svg(nodes, links, v, width, height, 40)}</div>'
                    for v in ('counts', 'fractions'))
    data = script_json({'jobs': list(pd.unique(nodes['job'])), 'particles':
                        int(nodes.groupby('job')['size'].sum().max()) if len(nodes) else 0})
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:16px}} button{{margin-right:6px}}
text{{font-family:sans-serif;pointer-events:none}}</style></head>
<body><h2>{html.escape(title)}</h2>
<p>Node height: class size; bands: particles shared by classes of consecutive jobs. Hover a
class or a band for numbers.</p>
<p><button onclick="show('counts')">counts</button>
<button onclick="show('fractions')">fractions</button></p>
{views}
<script type="application/json" id="sankey-data">{data}</script>
<script>{_SCRIPT}</script>
</body></html>
"""
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding='utf-8')
    return path


def script_json(value):
    """JSON text safe inside an HTML ``<script>`` element: ``<``, ``>`` and ``&`` are written
    as ``\\u`` escapes, so no text (``</script>``, ``<!--``) can end or alter the element."""
    text = json.dumps(value)
    for char in '<>&\u2028\u2029':
        text = text.replace(char, f'\\u{ord(char):04x}')
    return text
