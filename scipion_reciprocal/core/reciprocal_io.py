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
    per_class/<job>_class<k>.cs, intersections/...cs    (cryoSPARC inputs)
    inputs/<job>.star        cryoSPARC inputs in RELION's conventions (source of their STAR
                             subsets)

With a consensus verdict (``result.verdict``, :mod:`scipion_reciprocal.core.verdict`)::

    significance.csv         job1,job2,class1,class2,observed,expected,enrichment,p_value,q_value
    reproducibility.csv      job,class,size,reproduced_in,n_runs,best_matches,status
    merged_groups.csv        merged,size,groups,states,stable,class_<job>...
    merge_linkage.csv        the merging's linkage (SciPy's: cluster1,cluster2,distance,size)
    verdict.json             reproducible states, stable/unstable particles, reproduced classes
    stable_particles.star, unstable_particles.star      rows of the first job (STAR inputs)
    stable_particles.cs, unstable_particles.cs          the same, when it is a cryoSPARC input

and ``consensus_groups.csv`` gains ``expected,enrichment,p_value,q_value,significant,
reproducible,stability,merged``, ``consensus_membership.csv`` gains ``stability`` and
``merged``, and every subset STAR file gains a last column ``rlnReciprocalStability``.

``pysankey_input.csv``: one row per class pair with shared particles of each consecutive
pair of jobs; ``id`` counts rows from 0, ``jobANo_class`` is ``<job number>_<class>`` of
the earlier job (``85_1``), ``jobBNo_class`` the same for the later one, ``#particles`` the
shared count. With pySankey: ``df = pd.read_csv(path, index_col='id')`` then
``sankey(df['jobANo_class'], df['jobBNo_class'], leftWeight=df['#particles'])``, after
selecting one job pair.

Subset STAR files hold the rows of the first job named, copied verbatim from its input
file (optics and ``# version`` kept), rows in file order. A job read from cryoSPARC also
gets its subsets as ``.cs`` files: the rows of its input (main and passthrough files joined),
every field verbatim with the original ``uid``, loadable with ``numpy.load``.

Every file is written under a temporary name and renamed, and recorded in the
:class:`~scipion_reciprocal.formats.result_folder.ResultFolder` given (its manifest, written
when the caller finishes it, marks the folder complete); a plain path writes the same files
without recording them.
"""

import json
import os
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from ..formats.cryosparc import CS_SUFFIX
from ..formats.errors import FormatError, StarError
from ..formats.mrc import validate_mrc
from ..formats.result_folder import as_result_folder
from ..formats.relion import (OPTICS_LABELS, PIXEL_SIZE_LABELS, parse_image_names,
                              upgrade_to_relion31)
from .cryosparc_relion import star_bytes_per_row

__all__ = ['write_results', 'write_subsets', 'write_summary', 'summary_text', 'sankey_table',
           'write_int_csv', 'subset_relpath', 'subsets_size', 'conversions_size',
           'expected_size', 'check_subset_sources', 'membership_columns', 'consensus_table',
           'intersections_note']

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
#: Inputs written as STAR for their subsets (cryoSPARC inputs: ``inputs/<job>.star``).
INPUTS_DIR = 'inputs'
#: Suffixes of the subset files: RELION STAR for every input read from (or converted to)
#: STAR, cryoSPARC ``.cs`` for inputs read from cryoSPARC.
SUBSET_STAR_SUFFIX = '.star'
SUBSET_CS_SUFFIX = CS_SUFFIX
SIGNIFICANCE_CSV = 'significance.csv'
REPRODUCIBILITY_CSV = 'reproducibility.csv'
MERGED_CSV = 'merged_groups.csv'
MERGE_LINKAGE_CSV = 'merge_linkage.csv'
VERDICT_JSON = 'verdict.json'
STABLE_STAR = 'stable_particles.star'
UNSTABLE_STAR = 'unstable_particles.star'
#: The same particles as ``.cs`` files (the first job's rows) when it was read from cryoSPARC.
STABLE_CS = 'stable_particles' + CS_SUFFIX
UNSTABLE_CS = 'unstable_particles' + CS_SUFFIX
#: STAR label of the stability score in subset STAR files (RELION 3.1.2+ keeps unknown labels).
STABILITY_LABEL = 'rlnReciprocalStability'
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
    """Write integer columns (and float columns of few distinct values) as CSV, formatted
    with numpy (no per-row Python).

    Parameters
    ----------
    path : path
    columns : dict
        Header name -> integer array, or float array (``%.6g``, each distinct value formatted
        once); all of one length.
    """
    names = list(columns)
    values = [np.asarray(columns[n]) for n in names]
    n = len(values[0]) if values else 0
    parts = []
    for k, v in enumerate(values):
        parts.append(_format_floats(v) if v.dtype.kind == 'f' else
                     _format_ints(v.astype(np.int64, copy=False)))
        parts.append(np.full((n, 1), ord(',' if k < len(values) - 1 else '\n'), dtype=np.uint8))
    with open(path, 'wb') as fh:
        fh.write((','.join(names) + '\n').encode())
        if n:
            grid = np.hstack(parts)
            keep = grid != 0
            fh.write(grid[keep].tobytes())


def _format_floats(values):
    """``%.6g`` text of floats, left-aligned with zero bytes after it: (n, width)."""
    uniques, inverse = np.unique(values, return_inverse=True)
    texts = [('%.6g' % v).encode() for v in uniques.tolist()]
    table = np.zeros((len(texts), max(map(len, texts), default=1)), dtype=np.uint8)
    for i, text in enumerate(texts):
        table[i, :len(text)] = np.frombuffer(text, dtype=np.uint8)
    return table[inverse.ravel()]


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


def write_results(result, out, subsets=True):
    """Write every table, the summary and (for STAR inputs) the subset STAR files.

    Parameters
    ----------
    result : ReciprocalResult
    out : ResultFolder or path
        Where the files go; a ResultFolder records each one (the caller finishes it).
    subsets : bool
        Write ``per_class/`` and ``intersections/`` STAR files.

    Returns
    -------
    dict
        Category (``'tables'``, ``'matrices'``, ``'per_class'``, ``'intersections'``,
        ``'stability'`` (stable and unstable particles), ``'summary'``) -> list of
        pathlib.Path written.
    """
    out = as_result_folder(out)
    written = {'tables': [], 'matrices': [], 'per_class': [], 'intersections': [],
               'cryosparc': [], 'stability': [], 'summary': []}

    def csv(name, frame, **kw):
        written['tables'].append(out.write_csv(name, frame, index=False, **kw))

    verdict = result.verdict
    csv(COUNTS_CSV, result.counts)
    csv(FRACTIONS_CSV, result.fractions, float_format='%.6f')
    csv(JACCARD_CSV, result.jaccard, float_format='%.6f')
    csv(AGREEMENT_CSV, result.agreement, float_format='%.6f')
    csv(STABILITY_CSV, result.stability, float_format='%.6f')
    if verdict is None:
        csv(CONSENSUS_CSV, result.consensus, float_format='%.6f')
    else:
        csv(CONSENSUS_CSV, consensus_table(result), float_format='%.6g')
    csv(CLASS_SIZES_CSV, result.class_sizes)
    csv(JOBS_CSV, result.jobs)
    csv(OVERLAP_CSV, result.overlap)
    csv(SANKEY_CSV, sankey_table(result))
    with out.writing(MEMBERSHIP_CSV) as tmp:
        write_int_csv(tmp, membership_columns(result))
    written['tables'].append(out.path(MEMBERSHIP_CSV))
    if verdict is not None:
        csv(SIGNIFICANCE_CSV, verdict.significance, float_format='%.6g')
        csv(REPRODUCIBILITY_CSV, verdict.reproducibility)
        csv(MERGED_CSV, verdict.merge_table)
        csv(MERGE_LINKAGE_CSV, pd.DataFrame(verdict.merge.linkage, columns=[
            'cluster1', 'cluster2', 'distance', 'size']).astype(
            {'cluster1': np.int64, 'cluster2': np.int64, 'size': np.int64}),
            float_format='%.6f')
        written['tables'].append(out.write_text(
            VERDICT_JSON, json.dumps(verdict.summary, indent=2) + '\n'))
    for a in result.names:
        for b in result.names:
            if a == b:
                continue
            for kind in ('counts', 'fractions', 'jaccard'):
                written['matrices'].append(out.write_csv(
                    f'{MATRICES_DIR}/{kind}_{a}_vs_{b}.csv', result.matrix(kind, a, b),
                    float_format='%.6f'))
    if subsets or verdict is not None:
        for category, paths in write_subsets(result, out, subsets).items():
            written[category] += paths
    written['summary'] = [write_summary(result, out, written)]
    return written


def subset_relpath(subset, suffix=SUBSET_STAR_SUFFIX):
    """Path of a subset's STAR (or ``.cs``) file in the result folder."""
    folder = PER_CLASS_DIR if subset.kind == 'class' else INTERSECTIONS_DIR
    return f'{folder}/{subset.name}{suffix}'


def _star_row_bytes(clf):
    """Bytes per row of the STAR file a classification's STAR files copy rows from: its
    source, or the conversion of a cryoSPARC input not yet written as STAR (measured on a
    sample of its rows); 0 without either."""
    if clf.source is not None:
        return os.path.getsize(clf.source.path) / max(len(clf), 1)
    if clf.cs_source is not None:
        return star_bytes_per_row(clf.cs_source)
    return 0.0


def subsets_size(result):
    """Bytes the subset STAR (and ``.cs``) files will take, about: each subset's share of its
    source file's rows (header included once per file)."""
    total = 0
    for clf in result.classifications:
        rows = [len(s.rows[clf.name]) for s in result.subsets if s.source_job == clf.name]
        if clf.cs_source is not None:
            total += clf.cs_source.row_bytes * sum(rows) + 4096 * len(rows)
        if rows and len(clf):
            total += int(_star_row_bytes(clf) * sum(rows)) + 4096 * len(rows)
    return total


def conversions_size(result):
    """Bytes of the STAR conversions (``inputs/<name>.star``) of the cryoSPARC inputs not yet
    written as STAR, about."""
    return sum(int(_star_row_bytes(clf) * len(clf)) + 4096 for clf in result.classifications
               if clf.source is None and clf.cs_source is not None)


#: Bytes of one figure, about (PNG at 100 dpi: 30-90 kB; large heatmaps more).
FIGURE_BYTES = 100_000


def expected_size(result, subsets=True, plots=True):
    """Bytes that :func:`write_results` (and the plots) will write, about, with the STAR
    conversions of cryoSPARC inputs that the subsets or the verdict need: for the free-space
    check before anything is written."""
    names = result.names
    cells = sum(len(result.classes[a]) * len(result.classes[b])
                for a in names for b in names if a != b)
    tables = (len(result.assignments) * len(result.assignments.columns) * 8
              + cells * 3 * 80 + (1 << 20))
    n = len(names)
    figures = FIGURE_BYTES * (2 * n * (n - 1) + 3 + 2 * n) if plots else 0
    stable = 0
    if result.verdict is not None:      # stable + unstable particles: the first job's rows
        first = result.classifications[0]
        stable = int(_star_row_bytes(first) * len(first)) + 8192 if len(first) else 0
        if first.cs_source is not None:         # and as .cs files
            stable += first.cs_source.row_bytes * len(first) + 8192
        tables += len(result.assignments) * 16 + len(result.verdict.significance) * 100
        figures += 4 * FIGURE_BYTES if plots else 0
    converted = conversions_size(result) if subsets or result.verdict is not None else 0
    return tables + (subsets_size(result) if subsets else 0) + figures + stable + converted


#: Per-particle columns of a RELION 3.0 file that its subsets' optics table is built from.
_RELION30_OPTICS = OPTICS_LABELS + PIXEL_SIZE_LABELS


def check_subset_sources(classifications):
    """Make sure the subset STAR files can be written, before anything is written.

    A source without ``data_optics`` (RELION 3.0) gets, as its subsets will, an optics table
    from its per-particle acquisition columns; its box size comes from ``rlnImageSize`` or
    from the header of its first particle's stack (set as the table's ``image_size``).

    Raises
    ------
    StarError
        Naming the file and what is missing to build the optics table.
    """
    for clf in classifications:
        table = clf.source
        if table is None or table.has_optics or not len(table):
            continue
        columns = [c for c in table.columns if c in _RELION30_OPTICS or c == 'rlnImageName']
        frame = table.read_columns(columns)
        if 'rlnImageSize' not in frame.columns and table.image_size is None:
            if 'rlnImageName' not in frame.columns:
                raise StarError(table.path, _RELION30 + 'no rlnImageSize nor rlnImageName to '
                                            'find the box size' + _NO_SUBSETS)
            table.image_size = _stack_box_size(table.path, frame['rlnImageName'].iloc[0])
        try:
            upgrade_to_relion31(frame.drop(columns='rlnImageName', errors='ignore'),
                                image_size=table.image_size)
        except ValueError as exc:
            raise StarError(table.path, _RELION30 + str(exc) + _NO_SUBSETS) from None


_RELION30 = 'RELION 3.0 file (no data_optics): '
_NO_SUBSETS = '; its subset STAR files need an optics table (or write no subsets)'


def _stack_box_size(star_path, image_name):
    """Box size from the header of an image's stack, looked up relative to the STAR file's
    folder and its parents (a RELION job's images are relative to the project folder, two
    levels up), then the working folder."""
    _, stacks = parse_image_names([str(image_name)])
    stack = Path(str(stacks[0]))
    folder = Path(star_path).resolve().parent
    bases = [folder, *list(folder.parents)[:3], Path.cwd()]
    for base in bases:
        candidate = stack if stack.is_absolute() else base / stack
        if candidate.is_file():
            try:
                return int(validate_mrc(candidate)['shape'][-1])
            except FormatError as exc:
                raise StarError(star_path, f'{_RELION30}no rlnImageSize, and the stack header '
                                           f'that gives the box size is unreadable ({exc})'
                                           f'{_NO_SUBSETS}') from None
    where = stack if stack.is_absolute() else f'{stack} (under {bases[0]}, its parents or here)'
    raise StarError(star_path, f'{_RELION30}no rlnImageSize, and the stack that gives the box '
                               f'size is not found: {where}{_NO_SUBSETS}')


def consensus_table(result):
    """``consensus_groups.csv``: the consensus groups, with the verdict's columns when there
    is one."""
    if result.verdict is None:
        return result.consensus
    from .verdict import GROUP_COLUMNS
    groups = result.verdict.groups
    return pd.concat([result.consensus.reset_index(drop=True),
                      groups[GROUP_COLUMNS].reset_index(drop=True)], axis=1)


def membership_columns(result):
    """Columns of ``consensus_membership.csv``: ``row_<job>``, ``class_<job>``, ``group``, and
    with a verdict ``stability`` and ``merged``."""
    columns = {c: result.assignments[c].to_numpy() for c in result.assignments.columns}
    if result.verdict is not None:
        columns['stability'] = result.verdict.stability
        columns['merged'] = result.verdict.merged
    return columns


def _stability_by_row(result, name):
    """Stability of every input row of a job (NaN for rows outside the analysis)."""
    clf = result.classifications[result.names.index(name)]
    values = np.full(len(clf), np.nan)
    values[result.assignments[f'row_{name}'].to_numpy()] = result.verdict.stability
    return values


def write_subsets(result, out, subsets=True):
    """Write the per-class and intersection STAR files of jobs read from STAR files, the
    ``.cs`` files of jobs read from cryoSPARC (category ``'cryosparc'``), and with a verdict the stable and unstable particles (rows of the first job) and the stability of
    every row as a last column (:data:`STABILITY_LABEL`).

    Every job's file is mapped once; its subsets are copied from it, then it is released.
    ``subsets=False`` writes only the stable and unstable particles.
    """
    out = as_result_folder(out)
    written = {'per_class': [], 'intersections': [], 'cryosparc': [], 'stability': []}
    by_job = {}
    for subset in (result.subsets if subsets else []):
        by_job.setdefault(subset.source_job, []).append(subset)
    verdict = result.verdict
    first = result.names[0]
    for clf in result.classifications:
        table = clf.source
        stable_files = verdict is not None and clf.name == first
        if clf.cs_source is not None and (clf.name in by_job or stable_files):
            _write_cs_subsets(clf, by_job.get(clf.name, []), out, written,
                              _stable_rows(result) if stable_files else None)
        if table is None or (clf.name not in by_job and not stable_files):
            continue
        stability = _stability_by_row(result, clf.name) if verdict is not None else None
        try:
            for subset in by_job.get(clf.name, []):
                category = 'per_class' if subset.kind == 'class' else 'intersections'
                rows = subset.rows[clf.name]
                extra = None if stability is None else {STABILITY_LABEL: stability[rows]}
                with out.open_file(subset_relpath(subset)) as fh:
                    table.write_subset(fh, rows, extra_columns=extra)
                written[category].append(out.path(subset_relpath(subset)))
            if stable_files:
                for name, selected in zip((STABLE_STAR, UNSTABLE_STAR), _stable_rows(result)):
                    with out.open_file(name) as fh:
                        table.write_subset(fh, selected,
                                           extra_columns={STABILITY_LABEL: stability[selected]})
                    written['stability'].append(out.path(name))
        finally:
            table.close()
    return written


def _stable_rows(result):
    """Rows of the first job holding the stable and the unstable particles, in file order."""
    rows = result.assignments[f'row_{result.names[0]}'].to_numpy()
    stable = result.verdict.stable
    return np.sort(rows[stable]), np.sort(rows[~stable])


def _write_cs_subsets(clf, subsets, out, written, stable_rows=None):
    """The ``.cs`` subsets of a job read from cryoSPARC, and its stable and unstable
    particles when ``stable_rows`` are given: its input rows, every field verbatim (no
    stability column: cryoSPARC users get it from the STAR files)."""
    source = clf.cs_source
    try:
        for subset in subsets:
            relpath = subset_relpath(subset, SUBSET_CS_SUFFIX)
            with out.writing(relpath) as tmp:
                source.write_subset(tmp, subset.rows[clf.name])
            written['cryosparc'].append(out.path(relpath))
        for relpath, rows in zip((STABLE_CS, UNSTABLE_CS), stable_rows or ()):
            with out.writing(relpath) as tmp:
                source.write_subset(tmp, rows)
            written['stability'].append(out.path(relpath))
    finally:
        source.close()


def write_summary(result, out, written):
    """Write ``summary.txt`` (see :func:`summary_text`); returns its path."""
    return as_result_folder(out).write_text(SUMMARY_TXT, summary_text(result, written))


def verdict_lines(result):
    """The verdict's part of ``summary.txt``: states, reproduced classes, significance,
    merging, stability, and how each is computed."""
    verdict = result.verdict
    summary = verdict.summary
    p = summary['parameters']
    lines = [f'Consensus verdict: {verdict.sentence}',
             f'  parameters: Jaccard threshold {p["jaccard_threshold"]:g}, false discovery rate '
             f'{p["alpha"]:g}, stability threshold {p["stability_threshold"]:g}, minimum group '
             f'size {p["min_group_size"]}']
    for state in summary['states']:
        classes = ', '.join(f'{job} class {c}' for job, c in state['classes'].items())
        lines.append(f'  state (group {state["group"]}, {state["size"]} particles, merged group '
                     f'{state["merged"]}): {classes}')
    lines.append('  reproduced classes per run: ' + ', '.join(
        f'{job} {n} of {summary["classes"][job]}'
        for job, n in summary['reproduced_classes'].items()))
    for row in verdict.reproducibility.to_dict('records'):
        if row['status'] != 'reproduced':
            lines.append(f'    {row["job"]} class {row["class"]} ({row["size"]} particles): '
                         f'{row["status"]} (best matches {row["best_matches"]})')
    lines.append(f'  consensus groups: {summary["significant_groups"]} significant of '
                 f'{summary["consensus_groups"]}; merged into {summary["merged_groups"]} groups '
                 f'(cut at distance {summary["merge_cut"]:.3f}: {summary["merge_criterion"]}'
                 f'{"; class maps used" if p["class_maps_used"] else ""})')
    lines.append(f'  particles: {summary["stable_particles"]} stable, '
                 f'{summary["unstable_particles"]} unstable of {summary["particles"]}')
    lines.append('  methods:')
    lines += [f'    {name.replace("_", " ")}: {text}' for name, text in summary['methods'].items()]
    return lines


def intersections_note(result):
    """Which intersection subsets were kept, of how many class pairs that share particles,
    and how to get the others."""
    p = result.parameters
    kept = sum(s.kind == 'intersection' for s in result.subsets)
    pairs = sum(int(np.count_nonzero(c)) for c in result.contingency.values())
    least = max(p['min_overlap'], 1)
    text = (f'intersections: {kept} of the {pairs} class pairs that share particles, those of '
            f'at least {least} particle{"s" if least > 1 else ""} holding at least '
            f'{p["min_fraction"]:g} of one of the two classes')
    if kept < pairs:
        text += ('; a minimum of 1 particle and 0 of a class keeps them all (command line: '
                 '--all-intersections)')
    return text


def summary_text(result, written=None):
    """A human-readable account of the analysis."""
    p = result.parameters
    key = {'location': 'image location (index@stack) or original image name', 'id': 'particle id',
           'uid': 'cryoSPARC uid',
           'coordinates': f'micrograph + coordinates within {p.get("tolerance")} A'}[p['key']]
    lines = [f'Reciprocal analysis of {len(result.names)} classifications',
             f'particle key: {key}',
             f'minimum confidence: {p["min_confidence"]}; consensus groups kept from '
             f'{p["min_group_size"]} particles; intersections kept from {p["min_overlap"]} '
             f'particles and {p["min_fraction"]:g} of a class']
    if result.verdict is not None:
        lines.insert(0, f'Verdict: {result.verdict.sentence}')
    lines += ['', 'Inputs (rows; unique images)']
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
    for row in result.consensus.head(5).to_dict('records'):
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
    if result.verdict is not None:
        lines += [''] + verdict_lines(result)
    lines += ['', f'Subsets: {len(result.subsets)} ({sum(s.kind == "class" for s in result.subsets)} per '
                  f'class, {sum(s.kind == "intersection" for s in result.subsets)} intersections)',
              '  ' + intersections_note(result)]
    if written is not None and not (written['per_class'] or written['intersections']):
        lines.append('  no STAR subset written (inputs not read from STAR files, or disabled)')
    elif written is not None:
        lines += [f'  {clf.name}: no STAR subsets (not read from a STAR file)'
                  for clf in result.classifications
                  if clf.source is None and any(s.source_job == clf.name for s in result.subsets)]
    if written is not None and written.get('cryosparc'):
        lines.append(f'  {len(written["cryosparc"])} of them also as .cs files (cryoSPARC inputs: '
                     f'their rows with every field and uid)')
    lines += ['', 'Warnings'] + ([f'  {w}' for w in result.warnings] or ['  none'])
    return '\n'.join(lines) + '\n'
