"""Write the results of a reciprocal analysis to a folder.

Layout (file names are the constants below)::

    counts_matrix.csv        long form job1,job2,class1,class2,value (job and class numbers)
    fraction_matrix.csv      same, value = shared / size of class1 (0 for an empty class)
    jaccard_matrix.csv       same, value = shared / size of the union
    matrices/{counts,fractions,jaccard}_<job1>_vs_<job2>.csv   labelled wide matrices
    agreement.csv            adjusted Rand index, normalised mutual information per job pair
    class_stability.csv      best Jaccard match of every class in every other job
    consensus_groups.csv     groups of particles in the same class in every job
    consensus_membership.csv one row per shared particle: row and class in every job, group
    class_sizes.csv  jobs.csv  overlap.csv
    pysankey_input.csv       id,jobANo_class,jobBNo_class,#particles (consecutive job pairs)
    summary.txt              what was read, filtered, matched and found; warnings
    per_class/<job>_class<k>.star                       (STAR inputs only)
    intersections/<job1>_class<k>_vs_<job2>_class<l>.star (STAR inputs only)

``pysankey_input.csv``: one row per class pair with shared particles of each consecutive
pair of jobs; ``id`` counts rows from 0, ``jobANo_class`` is ``<job number>_<class>`` of
the earlier job (``85_1``), ``jobBNo_class`` the same for the later one, ``#particles`` the
shared count. With pySankey: ``df = pd.read_csv(path, index_col='id')`` then
``sankey(df['jobANo_class'], df['jobBNo_class'], leftWeight=df['#particles'])``, after
selecting one job pair.

Subset STAR files hold the rows of the first job named, copied verbatim from its input
file (optics and ``# version`` kept), rows in file order.
"""

from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ['write_results', 'write_subsets', 'write_summary', 'summary_text', 'sankey_table',
           'write_int_csv']

COUNTS_CSV = 'counts_matrix.csv'
FRACTIONS_CSV = 'fraction_matrix.csv'
JACCARD_CSV = 'jaccard_matrix.csv'
MATRICES_DIR = 'matrices'
AGREEMENT_CSV = 'agreement.csv'
STABILITY_CSV = 'class_stability.csv'
CONSENSUS_CSV = 'consensus_groups.csv'
MEMBERSHIP_CSV = 'consensus_membership.csv'
CLASS_SIZES_CSV = 'class_sizes.csv'
JOBS_CSV = 'jobs.csv'
OVERLAP_CSV = 'overlap.csv'
SANKEY_CSV = 'pysankey_input.csv'
SUMMARY_TXT = 'summary.txt'
PER_CLASS_DIR = 'per_class'
INTERSECTIONS_DIR = 'intersections'
SANKEY_COLUMNS = ['id', 'jobANo_class', 'jobBNo_class', '#particles']


def sankey_table(result):
    """The ``pysankey_input.csv`` table (see the module docstring)."""
    names = result.names
    numbers = dict(zip(result.jobs['job'], result.jobs['number']))
    frames = []
    for a, b in zip(names[:-1], names[1:]):
        counts = result.count_matrix(a, b)
        i, k = np.nonzero(counts)
        frames.append(pd.DataFrame({
            'jobANo_class': [f'{numbers[a]}_{c}' for c in result.classes[a][i]],
            'jobBNo_class': [f'{numbers[b]}_{c}' for c in result.classes[b][k]],
            '#particles': counts[i, k]}))
    table = pd.concat(frames, ignore_index=True)
    table.insert(0, 'id', np.arange(len(table)))
    return table


def write_int_csv(path, columns):
    """Write integer columns as CSV (digits formatted with numpy, no per-row Python).

    Parameters
    ----------
    path : path
    columns : dict
        Header name -> integer array; all of one length.
    """
    names = list(columns)
    values = [np.asarray(columns[n], dtype=np.int64) for n in names]
    n = len(values[0]) if values else 0
    parts = []
    for k, v in enumerate(values):
        parts.append(_format_ints(v))
        parts.append(np.full((n, 1), ord(',' if k < len(values) - 1 else '\n'), dtype=np.uint8))
    with open(path, 'wb') as fh:
        fh.write((','.join(names) + '\n').encode())
        if n:
            grid = np.hstack(parts)
            keep = grid != 0
            fh.write(grid[keep].tobytes())


def _format_ints(values):
    """Decimal digits of integers, right-aligned with zero bytes before them: (n, width)."""
    negative = values < 0
    mag = np.abs(values)
    n_digits = np.ones(len(values), dtype=np.int64)
    t = mag // 10
    while t.any():
        n_digits += t > 0
        t //= 10
    width = int(n_digits.max(initial=1)) + int(negative.any())
    out = np.zeros((len(values), width), dtype=np.uint8)
    t = mag.copy()
    for k in range(width):
        column = width - 1 - k
        out[:, column] = np.where(k < n_digits, 48 + t % 10, 0)
        if negative.any():
            out[:, column] = np.where(negative & (k == n_digits), ord('-'), out[:, column])
        t //= 10
    return out


def write_results(result, outdir, subsets=True):
    """Write every table, the summary and (for STAR inputs) the subset STAR files.

    Parameters
    ----------
    result : ReciprocalResult
    outdir : path
        Created if needed; files of a previous run are overwritten.
    subsets : bool
        Write ``per_class/`` and ``intersections/`` STAR files.

    Returns
    -------
    dict
        Category (``'tables'``, ``'matrices'``, ``'per_class'``, ``'intersections'``,
        ``'summary'``) -> list of pathlib.Path written.
    """
    outdir = Path(outdir)
    (outdir / MATRICES_DIR).mkdir(parents=True, exist_ok=True)
    written = {'tables': [], 'matrices': [], 'per_class': [], 'intersections': [],
               'summary': []}

    def csv(name, frame, **kw):
        path = outdir / name
        frame.to_csv(path, index=False, **kw)
        written['tables'].append(path)

    csv(COUNTS_CSV, result.counts)
    csv(FRACTIONS_CSV, result.fractions, float_format='%.6f')
    csv(JACCARD_CSV, result.jaccard, float_format='%.6f')
    csv(AGREEMENT_CSV, result.agreement, float_format='%.6f')
    csv(STABILITY_CSV, result.stability, float_format='%.6f')
    csv(CONSENSUS_CSV, result.consensus, float_format='%.6f')
    csv(CLASS_SIZES_CSV, result.class_sizes)
    csv(JOBS_CSV, result.jobs)
    csv(OVERLAP_CSV, result.overlap)
    csv(SANKEY_CSV, sankey_table(result))
    membership = outdir / MEMBERSHIP_CSV
    write_int_csv(membership, {c: result.assignments[c].to_numpy()
                               for c in result.assignments.columns})
    written['tables'].append(membership)
    for a in result.names:
        for b in result.names:
            if a == b:
                continue
            for kind in ('counts', 'fractions', 'jaccard'):
                path = outdir / MATRICES_DIR / f'{kind}_{a}_vs_{b}.csv'
                result.matrix(kind, a, b).to_csv(path, float_format='%.6f')
                written['matrices'].append(path)
    if subsets:
        for category, paths in write_subsets(result, outdir).items():
            written[category] += paths
    written['summary'] = [write_summary(result, outdir, written)]
    return written


def write_subsets(result, outdir):
    """Write the per-class and intersection STAR files of jobs read from STAR files.

    Every job's file is mapped once; its subsets are copied from it, then it is released.
    """
    outdir = Path(outdir)
    written = {'per_class': [], 'intersections': []}
    by_job = {}
    for subset in result.subsets:
        by_job.setdefault(subset.source_job, []).append(subset)
    for clf in result.classifications:
        table = clf.source
        if table is None or clf.name not in by_job:
            continue
        try:
            for subset in by_job[clf.name]:
                category = 'per_class' if subset.kind == 'class' else 'intersections'
                folder = outdir / (PER_CLASS_DIR if subset.kind == 'class' else INTERSECTIONS_DIR)
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / f'{subset.name}.star'
                table.write_subset(path, subset.rows[clf.name])
                written[category].append(path)
        finally:
            table.close()
    return written


def write_summary(result, outdir, written):
    """Write ``summary.txt`` (see :func:`summary_text`); returns its path."""
    summary = Path(outdir) / SUMMARY_TXT
    summary.write_text(summary_text(result, written), encoding='utf-8')
    return summary


def summary_text(result, written=None):
    """A human-readable account of the analysis."""
    p = result.parameters
    key = {'location': 'image location (index@stack) or original image name', 'id': 'particle id',
           'coordinates': f'micrograph + coordinates within {p.get("tolerance")} A'}[p['key']]
    lines = [f'Reciprocal analysis of {len(result.names)} classifications',
             f'particle key: {key}',
             f'minimum confidence: {p["min_confidence"]}; consensus groups kept from '
             f'{p["min_group_size"]} particles; intersections kept from {p["min_overlap"]} '
             f'particles and {p["min_fraction"]:g} of a class', '', 'Inputs (rows; unique images)']
    for job in result.jobs.itertuples():
        lines.append(f'  {job.job} (number {job.number}{", " + job.kind if job.kind else ""}): '
                     f'{job.source or "table"}')
        lines.append(f'    {job.rows} rows read; {job.below_confidence} below confidence; '
                     f'{job.rows_kept} kept ({job.images_kept} unique images); '
                     f'{job.rows_shared} shared by all jobs ({job.images_shared} unique images); '
                     f'{job.rows_not_shared} not in every job')
    lines += ['', 'Overlap per job pair (rows after the confidence filter)']
    for row in result.overlap.itertuples():
        lines.append(f'  {row.job1} x {row.job2}: {row.shared} shared, {row.only_job1} only in '
                     f'{row.job1}, {row.only_job2} only in {row.job2}')
    lines += ['', 'Agreement (adjusted Rand index, normalised mutual information)']
    for row in result.agreement.itertuples():
        lines.append(f'  {row.job1} x {row.job2}: ARI {row.adjusted_rand:.4f}, NMI '
                     f'{row.normalized_mutual_info:.4f} over {row.particles} particles')
    kept = result.consensus[result.consensus['kept']]
    total = max(len(result.assignments), 1)
    lines += ['', f'Consensus groups: {len(result.consensus)} groups, {len(kept)} kept, holding '
                  f'{int(kept["size"].sum())} particles ({100.0 * kept["size"].sum() / total:.1f}%)']
    class_cols = [c for c in result.consensus.columns if c.startswith('class_')]
    for row in result.consensus.head(5).itertuples(index=False):
        row = row._asdict()
        classes = ', '.join(f'{c[6:]} class {row[c]}' for c in class_cols)
        lines.append(f'  group {row["group"]}: {row["size"]} particles ({classes})')
    lines += ['', 'Best match of every class (Jaccard index; fraction of the class)']
    stability = result.stability
    for a, b in combinations(result.names, 2):
        table = stability[(stability['job'] == a) & (stability['other_job'] == b)]
        for cls, size, best, jac, frac in zip(table['class'], table['size'], table['best_class'],
                                              table['jaccard'], table['fraction']):
            lines.append(f'  {a} class {cls} ({size}) -> {b} class {best}: '
                         f'Jaccard {jac:.3f}, {100.0 * frac:.1f}%')
    lines += ['', f'Subsets: {len(result.subsets)} ({sum(s.kind == "class" for s in result.subsets)} per '
                  f'class, {sum(s.kind == "intersection" for s in result.subsets)} intersections)']
    if written is not None and not (written['per_class'] or written['intersections']):
        lines.append('  no STAR subset written (inputs not read from STAR files, or disabled)')
    lines += ['', 'Warnings'] + ([f'  {w}' for w in result.warnings] or ['  none'])
    return '\n'.join(lines) + '\n'
