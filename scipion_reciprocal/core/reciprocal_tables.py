"""Tables of the reciprocal analysis, computed from aligned classifications.

Called by :func:`scipion_reciprocal.core.reciprocal.reciprocal_analysis`; everything here
works on class indices of the particles shared by all jobs, with ``np.bincount`` and
``pd.factorize`` (no per-particle Python).
"""

import re
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd

__all__ = ['ReciprocalResult', 'Subset', 'compute_tables', 'adjusted_rand_from_contingency',
           'nmi_from_contingency']

LONG_COLUMNS = ['job1', 'job2', 'class1', 'class2', 'value']


@dataclass
class Subset:
    """Particles of one class, or of the intersection of two classes of two jobs.

    Attributes
    ----------
    kind : str
        ``'class'`` or ``'intersection'``.
    name : str
        File stem: ``job085_class3`` or ``job085_class1_vs_job086_class2``.
    classes : dict
        Job name -> class number.
    rows : dict
        Job name -> sorted row positions in that job's input (for an intersection, the
        rows of the same particles in both jobs).
    """

    kind: str
    name: str
    classes: dict
    rows: dict

    @property
    def size(self):
        """Number of rows (the same in every job of the subset)."""
        return len(next(iter(self.rows.values())))

    @property
    def source_job(self):
        """The job whose rows are written to the subset's STAR file (the first named)."""
        return next(iter(self.classes))


@dataclass
class ReciprocalResult:
    """Everything the reciprocal analysis computes (see :func:`reciprocal_analysis`).

    Attributes
    ----------
    jobs : pandas.DataFrame
        One row per job: ``job`` (name), ``number``, ``kind``, ``source``, ``rows``,
        ``below_confidence``, ``rows_kept``, ``images_kept``, ``rows_shared``,
        ``images_shared``, ``rows_not_shared``.
    class_sizes : pandas.DataFrame
        ``job``, ``number``, ``class``, ``size_kept`` (rows after the confidence filter),
        ``size`` (rows shared by all jobs, the analysis set).
    counts, fractions, jaccard : pandas.DataFrame
        Long form ``job1, job2, class1, class2, value`` (job numbers), every class pair of
        every ordered pair of different jobs. ``fractions`` = shared / size of ``class1``;
        0 for an empty class.
    agreement : pandas.DataFrame
        Per pair of jobs: ``job1``, ``job2`` (names), ``number1``, ``number2``,
        ``particles``, ``adjusted_rand``, ``normalized_mutual_info``.
    stability : pandas.DataFrame
        Per job, class and other job: ``job``, ``class``, ``size``, ``other_job``,
        ``best_class``, ``shared``, ``jaccard``, ``fraction``.
    overlap : pandas.DataFrame
        Per pair of jobs (after the confidence filter): ``job1``, ``job2``, ``shared``,
        ``only_job1``, ``only_job2`` (rows).
    consensus : pandas.DataFrame
        Groups of particles in the same class in every job, largest first: ``group``,
        ``size``, ``fraction``, ``kept`` and ``class_<job>`` per job.
    assignments : pandas.DataFrame
        One row per shared particle: ``row_<job>`` (position in that job's input),
        ``class_<job>`` per job, and ``group`` (0 when its group is not kept).
    subsets : list of Subset
    warnings : list of str
    parameters : dict
    classifications : list of Classification
    contingency : dict
        (job name a, job name b) -> count matrix (classes of a x classes of b), a before b.
    classes : dict
        Job name -> class numbers (rows/columns of the matrices).
    particle_groups : numpy.ndarray
        Consensus group (``consensus['group']``, kept or not) of every row of
        ``assignments``.
    verdict : Verdict, optional
        Significance, reproducibility, merging and stability
        (:func:`scipion_reciprocal.core.verdict.consensus_verdict`), when computed; the
        files, summary and plots include it.
    """

    jobs: pd.DataFrame
    class_sizes: pd.DataFrame
    counts: pd.DataFrame
    fractions: pd.DataFrame
    jaccard: pd.DataFrame
    agreement: pd.DataFrame
    stability: pd.DataFrame
    overlap: pd.DataFrame
    consensus: pd.DataFrame
    assignments: pd.DataFrame
    subsets: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    parameters: dict = field(default_factory=dict)
    classifications: list = field(default_factory=list)
    contingency: dict = field(default_factory=dict)
    classes: dict = field(default_factory=dict)
    particle_groups: np.ndarray = None
    verdict: object = None

    @property
    def names(self):
        """Job names in analysis order."""
        return list(self.jobs['job'])

    def sizes(self, job):
        """Class sizes (analysis set) of a job, indexed by class number."""
        table = self.class_sizes[self.class_sizes['job'] == job]
        return pd.Series(table['size'].to_numpy(), index=table['class'].to_numpy())

    def matrix(self, kind, job1, job2):
        """A labelled wide matrix: rows ``<job1>_class<k>``, columns ``<job2>_class<l>``.

        Parameters
        ----------
        kind : {'counts', 'fractions', 'jaccard'}
        job1, job2 : str
            Job names (different).
        """
        counts = self.count_matrix(job1, job2)
        size1 = self.sizes(job1).to_numpy()[:, None]
        size2 = self.sizes(job2).to_numpy()[None, :]
        if kind == 'counts':
            values = counts
        elif kind == 'fractions':
            values = _divide(counts, size1)
        elif kind == 'jaccard':
            values = _divide(counts, size1 + size2 - counts)
        else:
            raise ValueError(f"kind must be 'counts', 'fractions' or 'jaccard', not {kind!r}")
        return pd.DataFrame(values,
                            index=[f'{job1}_class{c}' for c in self.classes[job1]],
                            columns=[f'{job2}_class{c}' for c in self.classes[job2]])

    def count_matrix(self, job1, job2):
        """Count matrix (classes of job1 x classes of job2) as a numpy array."""
        if (job1, job2) in self.contingency:
            return self.contingency[(job1, job2)]
        return self.contingency[(job2, job1)].T

    def subset_ids(self, subset, job):
        """Row identifiers (``Classification.row_ids``) of a subset's rows in a job."""
        clf = self.classifications[self.names.index(job)]
        return clf.ids[subset.rows[job]]


def _divide(num, den):
    num = np.asarray(num, dtype=np.float64)
    den = np.broadcast_to(np.asarray(den, dtype=np.float64), num.shape)
    out = np.zeros(num.shape)
    np.divide(num, den, out=out, where=den > 0)
    return out


def adjusted_rand_from_contingency(counts):
    """Adjusted Rand index from a contingency matrix (same value as scikit-learn's
    ``adjusted_rand_score`` on the labels)."""
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    sum_squares = int((counts.astype(object) ** 2).sum()) if counts.size else 0
    rows, cols = counts.sum(axis=1), counts.sum(axis=0)
    fp = int((counts.astype(object) @ cols.astype(object)).sum()) - sum_squares
    fn = int((counts.T.astype(object) @ rows.astype(object)).sum()) - sum_squares
    tp = sum_squares - n
    tn = n * n - fp - fn - sum_squares
    if fn == 0 and fp == 0:
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def _entropy(sizes):
    sizes = np.asarray(sizes, dtype=np.float64)
    sizes = sizes[sizes > 0]
    total = sizes.sum()
    if len(sizes) <= 1:
        return 0.0
    return float(-np.sum((sizes / total) * (np.log(sizes) - np.log(total))))


def nmi_from_contingency(counts):
    """Normalised mutual information (arithmetic mean of the entropies) from a contingency
    matrix, as scikit-learn's ``normalized_mutual_info_score`` on the labels.

    The mutual information is summed here rather than by scikit-learn's
    ``mutual_info_score``: importing scikit-learn takes about 0.3 s, a tenth of the command
    line's reading time."""
    counts = np.asarray(counts, dtype=np.int64)
    rows, cols = counts.sum(axis=1), counts.sum(axis=0)
    n_rows, n_cols = np.count_nonzero(rows), np.count_nonzero(cols)
    if n_rows == n_cols and n_rows in (0, 1):
        return 1.0
    mi = _mutual_information(counts, rows, cols)
    if mi == 0:
        return 0.0
    return float(mi / ((_entropy(rows) + _entropy(cols)) / 2.0))


def _mutual_information(counts, rows, cols):
    """Mutual information (nats) of the two labellings a contingency matrix counts."""
    i, k = np.nonzero(counts)
    n_ik = counts[i, k].astype(np.float64)
    total = n_ik.sum()
    outer = rows[i].astype(np.float64) * cols[k].astype(np.float64)
    mi = np.sum(n_ik / total * (np.log(n_ik) + np.log(total) - np.log(outer)))
    return max(float(mi), 0.0)


def _safe(name):
    return re.sub(r'[^A-Za-z0-9_.-]+', '_', str(name))


def _first_positions(codes):
    """Index of the first row of every code (codes numbered in order of appearance)."""
    return np.flatnonzero(np.diff(np.maximum.accumulate(codes), prepend=-1) > 0)


def _group_rows(codes, n_codes):
    """Rows of each code: (order, bounds) with rows of code k at order[bounds[k]:bounds[k+1]]."""
    if n_codes < 1 << 15:
        codes = codes.astype(np.int16)      # stable sort of 16-bit integers is a radix sort
    order = np.argsort(codes, kind='stable')
    bounds = np.concatenate(([0], np.cumsum(np.bincount(codes, minlength=n_codes))))
    return order, bounds


def _overlap(classifications, align, error_cls):
    """Shared particles, per-job rows of them, and the pairwise overlap table."""
    n_jobs = len(classifications)
    names = [c.name for c in classifications]
    present = None
    if not align.same_order:
        present = np.zeros((n_jobs, align.n_particles), dtype=bool)
        for j, pids in enumerate(align.pids):
            present[j, pids] = True
    pairs = []
    for a, b in combinations(range(n_jobs), 2):
        both = len(align.pids[a]) if present is None else \
            int(np.count_nonzero(present[a] & present[b]))
        pairs.append((names[a], names[b], both, len(align.pids[a]) - both,
                      len(align.pids[b]) - both))
        if both == 0:
            src = [str(classifications[i].source_file or names[i])
                   for i in (a, b)]
            raise error_cls(f'jobs {names[a]} and {names[b]} share no particles (key: '
                            f'{classifications[a].keys.kind}; files: {src[0]}, {src[1]})')
    overlap = pd.DataFrame(pairs, columns=['job1', 'job2', 'shared', 'only_job1', 'only_job2'])
    if present is None:
        return [np.arange(len(pids)) for pids in align.pids], overlap
    shared = np.flatnonzero(present.all(axis=0))
    if not len(shared):
        raise error_cls(f'no particle is in all of {", ".join(names)} (each pair overlaps, '
                        f'but no particle is in every job)')
    in_kept = []
    for pids in align.pids:
        pos = np.full(align.n_particles, -1, dtype=np.int64)
        pos[pids] = np.arange(len(pids))
        in_kept.append(pos[shared])
    return in_kept, overlap


def _class_index(class_list, classes):
    """Position of every class number in the sorted ``class_list`` (int16 when it fits,
    so that stable sorts of it are radix sorts)."""
    dtype = np.int16 if len(class_list) < 1 << 15 else np.int64
    if len(class_list) and 0 <= class_list[0] and class_list[-1] < 1 << 20:
        lut = np.zeros(int(class_list[-1]) + 1, dtype=dtype)
        lut[class_list] = np.arange(len(class_list), dtype=dtype)
        return lut[classes]
    return np.searchsorted(class_list, classes).astype(dtype)


def _n_images(codes):
    return int(np.count_nonzero(np.bincount(codes))) if len(codes) else 0


def compute_tables(classifications, align, warnings, parameters, error_cls):
    """Build the :class:`ReciprocalResult` of aligned classifications."""
    names = [c.name for c in classifications]
    numbers = {c.name: c.number for c in classifications}
    in_kept, overlap = _overlap(classifications, align, error_cls)
    rows = [kept[k] for kept, k in zip(align.kept, in_kept)]
    n_shared = len(rows[0])
    classes, idx, sizes, job_rows, size_rows = {}, {}, {}, [], []
    images_kept = {}
    for j, c in enumerate(classifications):
        cls = c.all_classes
        classes[c.name] = cls
        kept_idx = _class_index(cls, c.classes[align.kept[j]])
        idx[c.name] = kept_idx if align.same_order else kept_idx[in_kept[j]]
        sizes[c.name] = np.bincount(idx[c.name], minlength=len(cls))
        kept_sizes = np.bincount(kept_idx, minlength=len(cls))
        size_rows += [(c.name, c.number, int(k), int(s0), int(s))
                      for k, s0, s in zip(cls, kept_sizes, sizes[c.name])]
        images = align.images[j]
        if align.same_order and j:
            n_kept = n_shared_images = images_kept[0]
        else:
            n_kept = _n_images(images)
            n_shared_images = n_kept if align.same_order else _n_images(images[in_kept[j]])
        images_kept[j] = n_kept
        # ``is not None``: the truth of a StarTable is its length, a scan of the whole file.
        source = str(c.source_file) if c.source_file is not None else None
        job_rows.append((c.name, c.number, c.kind, source,
                         len(c), len(c) - len(align.kept[j]), len(align.kept[j]), n_kept,
                         n_shared, n_shared_images, len(align.kept[j]) - n_shared))
    jobs = pd.DataFrame(job_rows, columns=[
        'job', 'number', 'kind', 'source', 'rows', 'below_confidence', 'rows_kept',
        'images_kept', 'rows_shared', 'images_shared', 'rows_not_shared'])
    for job in jobs.itertuples():
        if job.rows_not_shared:
            warnings.append(f'{job.job}: {job.rows_not_shared} of {job.rows_kept} rows '
                            f'({100.0 * job.rows_not_shared / job.rows_kept:.1f}%) are not in '
                            f'every other job; the analysis uses the {n_shared} shared particles')
    contingency = {}
    for a, b in combinations(names, 2):
        kb = len(classes[b])
        flat = np.bincount(idx[a].astype(np.int64) * kb + idx[b], minlength=len(classes[a]) * kb)
        contingency[(a, b)] = flat.reshape(len(classes[a]), kb)
    result = ReciprocalResult(
        jobs=jobs,
        class_sizes=pd.DataFrame(size_rows, columns=['job', 'number', 'class', 'size_kept', 'size']),
        counts=None, fractions=None, jaccard=None, agreement=None, stability=None,
        overlap=overlap, consensus=None, assignments=None, warnings=warnings,
        parameters=parameters, classifications=classifications, contingency=contingency,
        classes=classes)
    _long_tables(result, names, numbers)
    _agreement_and_stability(result, names, numbers)
    _consensus(result, names, idx, rows, parameters['min_group_size'])
    result.subsets = _subsets(result, names, idx, rows, parameters)
    return result


def _long_tables(result, names, numbers):
    frames = {'counts': [], 'fractions': [], 'jaccard': []}
    for a in names:
        for b in names:
            if a == b:
                continue
            c1, c2 = np.meshgrid(result.classes[a], result.classes[b], indexing='ij')
            for kind in frames:
                values = result.matrix(kind, a, b).to_numpy()
                frames[kind].append(pd.DataFrame({
                    'job1': numbers[a], 'job2': numbers[b], 'class1': c1.ravel(),
                    'class2': c2.ravel(), 'value': values.ravel()}))
    result.counts = pd.concat(frames['counts'], ignore_index=True)
    result.counts['value'] = result.counts['value'].astype(np.int64)
    result.fractions = pd.concat(frames['fractions'], ignore_index=True)
    result.jaccard = pd.concat(frames['jaccard'], ignore_index=True)


def _agreement_and_stability(result, names, numbers):
    agreement = []
    for a, b in combinations(names, 2):
        counts = result.contingency[(a, b)]
        agreement.append((a, b, numbers[a], numbers[b], int(counts.sum()),
                          adjusted_rand_from_contingency(counts), nmi_from_contingency(counts)))
    result.agreement = pd.DataFrame(agreement, columns=[
        'job1', 'job2', 'number1', 'number2', 'particles', 'adjusted_rand',
        'normalized_mutual_info'])
    frames = []
    for a in names:
        for b in names:
            if a == b:
                continue
            jac = result.matrix('jaccard', a, b).to_numpy()
            counts = result.count_matrix(a, b)
            best = np.argmax(jac, axis=1)
            pick = np.arange(len(best))
            size = result.sizes(a).to_numpy()
            frames.append(pd.DataFrame({
                'job': a, 'class': result.classes[a], 'size': size, 'other_job': b,
                'best_class': result.classes[b][best], 'shared': counts[pick, best],
                'jaccard': jac[pick, best], 'fraction': _divide(counts[pick, best], size)}))
    result.stability = pd.concat(frames, ignore_index=True)


def _consensus(result, names, idx, rows, min_size):
    code = np.zeros(len(rows[0]), dtype=np.int64)
    for name in names:
        code, _ = pd.factorize(code * len(result.classes[name]) + idx[name].astype(np.int64))
        code = code.astype(np.int64)
    n_groups = int(code.max()) + 1 if len(code) else 0
    size = np.bincount(code, minlength=n_groups)
    first = _first_positions(code)
    tuples = [result.classes[name][idx[name][first]] for name in names]
    order = np.lexsort(tuple(reversed(tuples)) + (-size,))
    group_of = np.empty(n_groups, dtype=np.int64)
    group_of[order] = np.arange(1, n_groups + 1)
    kept = size >= max(int(min_size), 1)
    table = pd.DataFrame({'group': np.arange(1, n_groups + 1), 'size': size[order],
                          'fraction': size[order] / max(len(code), 1), 'kept': kept[order]})
    for name, cls in zip(names, tuples):
        table[f'class_{name}'] = cls[order]
    result.consensus = table
    assignments = {}
    for j, name in enumerate(names):
        assignments[f'row_{name}'] = rows[j]
        assignments[f'class_{name}'] = result.classes[name][idx[name]]
    result.particle_groups = group_of[code]
    assignments['group'] = np.where(kept[code], result.particle_groups, 0)
    result.assignments = pd.DataFrame(assignments)


def _subsets(result, names, idx, rows, parameters):
    subsets = []
    # Groups come out of a stable sort: their rows stay ascending where the job's are.
    ascending = [len(r) < 2 or bool(np.all(r[1:] > r[:-1])) for r in rows]

    def in_order(j, selected):
        return selected if ascending[j] else np.sort(selected)

    for j, name in enumerate(names):
        cls = result.classes[name]
        order, bounds = _group_rows(idx[name], len(cls))
        for k, c in enumerate(cls):
            if bounds[k + 1] > bounds[k]:
                subsets.append(Subset('class', f'{_safe(name)}_class{c}', {name: int(c)},
                                      {name: in_order(j, rows[j][order[bounds[k]:bounds[k + 1]]])}))
    min_overlap = max(int(parameters['min_overlap']), 1)
    for (a, b), counts in result.contingency.items():
        ia, ib = names.index(a), names.index(b)
        size_a = result.sizes(a).to_numpy()[:, None]
        size_b = result.sizes(b).to_numpy()[None, :]
        best = np.maximum(_divide(counts, size_a), _divide(counts, size_b))
        keep = (counts >= min_overlap) & (best >= parameters['min_fraction'])
        if not keep.any():
            continue
        kb = counts.shape[1]
        order, bounds = _group_rows(idx[a].astype(np.int64) * kb + idx[b], counts.size)
        for k in np.flatnonzero(keep.ravel()):
            sel = order[bounds[k]:bounds[k + 1]]
            ca, cb = result.classes[a][k // kb], result.classes[b][k % kb]
            subsets.append(Subset(
                'intersection', f'{_safe(a)}_class{ca}_vs_{_safe(b)}_class{cb}',
                {a: int(ca), b: int(cb)},
                {a: in_order(ia, rows[ia][sel]), b: in_order(ib, rows[ib][sel])}))
    return subsets
