"""The consensus verdict of a reciprocal analysis: how many states are reproducible, which
particles are stable, which consensus groups merge.

:func:`consensus_verdict` takes a :class:`~.reciprocal_tables.ReciprocalResult` and combines
:mod:`.consensus_significance` (p- and q-values), :mod:`.reproducibility` (reproduced
classes, states, particle stability) and :mod:`.consensus_merge` (merged groups). Every step
works on count matrices and on the consensus groups (at most one row per observed class
combination); particles only receive their group's values by one array lookup.
"""

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd

from ..formats.errors import FormatError
from ..formats.mrc import read_images, read_map
from .consensus_merge import (flow_similarity, group_distances, map_correlations,
                              map_similarity, merge_groups, MergeResult)
from .consensus_significance import group_significance, significance_table
from .reproducibility import (group_stability, pairwise_reproduced, reproduced_pairs,
                              reproducibility_table)

__all__ = ['consensus_verdict', 'Verdict', 'verdict_sentence', 'class_map_correlations',
           'check_parameters', 'JACCARD_THRESHOLD', 'ALPHA', 'STABILITY_THRESHOLD',
           'GROUP_COLUMNS', 'METHODS']

#: Default Jaccard index a reproduced class pair reaches at least: two classes of equal size
#: sharing a bit less than half of their particles.
JACCARD_THRESHOLD = 0.3
#: Default false discovery rate (Benjamini-Hochberg) of significant intersections and groups.
ALPHA = 0.05
#: Default stability of a stable particle (with 4 runs or fewer: reproduced in every run pair).
STABILITY_THRESHOLD = 0.75
#: Columns the verdict adds to the consensus groups table.
GROUP_COLUMNS = ['expected', 'enrichment', 'p_value', 'q_value', 'significant', 'reproducible',
                 'stability', 'merged']
#: How each number is computed, as written to verdict.json and the summary.
METHODS = {
    'intersection_p_value': 'exact hypergeometric upper tail P(X >= observed) given the two '
                            'class sizes and the shared particles (scipy.stats.hypergeom.sf)',
    'group_p_value': 'exact conditional hypergeometric test: for every run, the upper tail of '
                     "the group's count given its class size in that run and the particles in "
                     "the group's classes of all other runs; the largest over the runs",
    'q_value': 'Benjamini-Hochberg, over all class pairs of all run pairs (intersections) and '
               'over the observed consensus groups (groups)',
    'reproduced': 'mutual best Jaccard match, significant intersection, Jaccard at least the '
                  'threshold',
    'reproducible_state': 'significant consensus group of at least the minimum size whose '
                          'classes form reproduced pairs in every run pair',
    'stability': 'fraction of run pairs in which the particle\'s two classes form a '
                 'reproduced pair',
    'stable': 'stability at least the threshold, in a significant consensus group of at '
              'least the minimum size',
    'merging': 'average linkage of the significant consensus groups of at least the minimum '
               'size; distance 1 - mean over runs of the similarity of their classes (where '
               'their particles go in the other runs, averaged with class-map correlation '
               'when every run has maps)',
}


@dataclass
class Verdict:
    """Everything :func:`consensus_verdict` computes.

    Attributes
    ----------
    significance : pandas.DataFrame
        Every class pair of every run pair (earlier run first): ``job1, job2, class1, class2,
        observed, expected, enrichment, p_value, q_value``.
    groups : pandas.DataFrame
        One row per consensus group, in the order of ``result.consensus``: ``group`` and
        :data:`GROUP_COLUMNS` (``merged`` 0 for groups not merged).
    reproducibility : pandas.DataFrame
        One row per class of every run (see :func:`.reproducibility.reproducibility_table`).
    reproduced : dict
        ``(a, b)`` -> bool matrix of reproduced class pairs, for every ordered run pair.
    stability : numpy.ndarray
        Stability of every row of ``result.assignments``.
    stable : numpy.ndarray of bool
        Whether that particle is stable.
    merged : numpy.ndarray of int
        Merged group of that particle (0: in no merged group).
    merge : MergeResult
        Merging of the significant kept groups; ``merge_groups`` holds their group numbers.
    merge_groups : numpy.ndarray
        Consensus group numbers that entered the merging, in the order of ``merge.labels``.
    merge_table : pandas.DataFrame
        One row per merged group: ``merged``, ``size``, ``groups``, ``states`` (reproducible
        groups in it), ``stable`` (its stable particles) and ``class_<job>`` (the class of each
        run holding most of its particles).
    summary : dict
        The content of ``verdict.json`` (its ``warnings`` are also added to
        ``result.warnings``).
    """

    significance: pd.DataFrame
    groups: pd.DataFrame
    reproducibility: pd.DataFrame
    reproduced: dict
    stability: np.ndarray
    stable: np.ndarray
    merged: np.ndarray
    merge: MergeResult
    merge_groups: np.ndarray
    merge_table: pd.DataFrame
    summary: dict = field(default_factory=dict)

    @property
    def sentence(self):
        """The verdict in words ("3 reproducible states; 81% of particles stable")."""
        return self.summary['verdict']


def verdict_sentence(states, stable_fraction):
    """``'3 reproducible states; 81% of particles stable'``."""
    return (f'{states} reproducible state{"" if states == 1 else "s"}; '
            f'{100.0 * stable_fraction:.0f}% of particles stable')


def class_map_correlations(result, maps):
    """Correlations of every run's class maps, for :func:`consensus_verdict`.

    Parameters
    ----------
    result : ReciprocalResult
    maps : dict
        Run name -> class map table (``class``, ``path``, ``index``, ``exists``; from
        :func:`~.relion_jobs.class_maps` or a Scipion set's representatives), or None.

    Returns
    -------
    dict
        Run name -> (classes x classes) correlation matrix in ``result.classes`` order, or
        None for a run without a readable map (or image) of one shape for every class.
    """
    out = {}
    for name in result.names:
        table = (maps or {}).get(name)
        out[name] = None
        if table is None or not len(table):
            continue
        rows = table.set_index('class')
        if not set(result.classes[name]) <= set(rows.index) or \
                not rows.loc[result.classes[name], 'exists'].all():
            continue
        try:
            volumes = [read_images(row['path'], [int(row['index'])])[0] if row['index']
                       else read_map(row['path'])[0]
                       for row in rows.loc[result.classes[name]].to_dict('records')]
        except (FormatError, OSError, ValueError):
            continue
        if len({v.shape for v in volumes}) == 1:
            out[name] = map_correlations(volumes)
    return out


def check_parameters(jaccard_threshold, alpha, stability_threshold, merge_distance=None):
    """Raise ValueError naming the first parameter outside [0, 1]."""
    for label, value in (('jaccard threshold', jaccard_threshold), ('alpha', alpha),
                         ('stability threshold', stability_threshold),
                         ('merge distance', merge_distance)):
        if value is not None and not 0.0 <= float(value) <= 1.0:
            raise ValueError(f'{label} must be between 0 and 1, not {value}')


def _class_index(result, name, numbers):
    return np.searchsorted(result.classes[name], np.asarray(numbers, dtype=np.int64))


def consensus_verdict(result, jaccard_threshold=JACCARD_THRESHOLD, alpha=ALPHA,
                      stability_threshold=STABILITY_THRESHOLD, merge_distance=None,
                      map_correlations=None):
    """Significance, reproducibility, merging and stability of a reciprocal analysis.

    Parameters
    ----------
    result : ReciprocalResult
    jaccard_threshold : float
        Smallest Jaccard index of a reproduced class pair.
    alpha : float
        False discovery rate: intersections and groups with a q-value up to it are
        significant.
    stability_threshold : float
        Smallest stability of a stable particle, in [0, 1].
    merge_distance : float, optional
        Merge groups joined at up to this distance; default: the largest gap.
    map_correlations : dict, optional
        Run name -> class-map correlation matrix (classes in ``result.classes`` order); used
        when every run has one.

    Returns
    -------
    Verdict
    """
    check_parameters(jaccard_threshold, alpha, stability_threshold, merge_distance)
    names = result.names
    numbers = dict(zip(result.jobs['job'], result.jobs['number']))
    n = len(result.assignments)
    sizes = {name: result.sizes(name).to_numpy() for name in names}
    warnings = [f'{name}: all its particles are in one class: none of its classes can be '
                f'reproduced, so no consensus group is significant and no particle stable '
                f'(leave it out of the analysis)'
                for name in names if np.count_nonzero(sizes[name]) < 2]
    result.warnings.extend(w for w in warnings if w not in result.warnings)

    significance = significance_table(names, numbers, result.classes, result.count_matrix, n)
    reproduced = {}
    position = 0
    for a, b in combinations(names, 2):
        cells = len(result.classes[a]) * len(result.classes[b])
        q = significance['q_value'].to_numpy()[position:position + cells].reshape(
            len(result.classes[a]), len(result.classes[b]))
        position += cells
        jac = result.matrix('jaccard', a, b).to_numpy()
        reproduced[(a, b)] = reproduced_pairs(jac, q, jaccard_threshold, alpha)
        reproduced[(b, a)] = reproduced[(a, b)].T
    reproducibility = reproducibility_table(
        names, result.classes, sizes, lambda a, b: result.matrix('jaccard', a, b).to_numpy(),
        reproduced)

    consensus = result.consensus
    tuples = np.column_stack([_class_index(result, name, consensus[f'class_{name}'])
                              for name in names])
    group_sizes = consensus['size'].to_numpy(dtype=np.int64)
    groups = group_significance(tuples, group_sizes, [sizes[name] for name in names], n)
    groups.insert(0, 'group', consensus['group'].to_numpy())
    groups['significant'] = groups['q_value'].to_numpy() <= alpha
    pairwise = pairwise_reproduced(tuples, [reproduced[pair] for pair in combinations(names, 2)],
                                   len(names))
    kept = consensus['kept'].to_numpy(dtype=bool)
    groups['reproducible'] = groups['significant'].to_numpy() & kept & pairwise.all(axis=1)
    groups['stability'] = group_stability(pairwise)
    stable_group = (groups['significant'].to_numpy() & kept
                    & (groups['stability'].to_numpy() >= stability_threshold - 1e-12))

    candidates = np.flatnonzero(groups['significant'].to_numpy() & kept)
    similarities = flow_similarity(names, result.classes, result.count_matrix)
    if map_correlations and all(map_correlations.get(name) is not None for name in names):
        similarities = {name: (similarities[name] + map_similarity(map_correlations[name])) / 2.0
                        for name in names}
    distances = group_distances(tuples[candidates], [similarities[name] for name in names])
    merge = merge_groups(distances, group_sizes[candidates], cut=merge_distance)
    merged_of_group = np.zeros(len(consensus), dtype=np.int64)
    merged_of_group[candidates] = merge.labels
    groups['merged'] = merged_of_group

    row = result.particle_groups - 1        # consensus groups are numbered 1.. in table order
    stability = groups['stability'].to_numpy()[row]
    stable = stable_group[row]
    merged = merged_of_group[row]
    merge_table = _merge_table(result, names, groups, tuples, stable_group, merge)
    summary = _summary(result, names, groups, reproducibility, stable, merge, merge_table,
                       warnings,
                       dict(jaccard_threshold=float(jaccard_threshold), alpha=float(alpha),
                            stability_threshold=float(stability_threshold),
                            merge_distance=None if merge_distance is None
                            else float(merge_distance),
                            min_group_size=int(result.parameters.get('min_group_size', 1)),
                            class_maps_used=bool(map_correlations) and all(
                                map_correlations.get(name) is not None for name in names)))
    return Verdict(significance=significance, groups=groups, reproducibility=reproducibility,
                   reproduced=reproduced, stability=stability, stable=stable, merged=merged,
                   merge=merge, merge_groups=consensus['group'].to_numpy()[candidates],
                   merge_table=merge_table, summary=summary)


def _merge_table(result, names, groups, tuples, stable_group, merge):
    merged = groups['merged'].to_numpy()
    sizes = result.consensus['size'].to_numpy(dtype=np.int64)
    rows = []
    for label in range(1, merge.n_merged + 1):
        members = np.flatnonzero(merged == label)
        row = {'merged': label, 'size': int(sizes[members].sum()),
               'groups': ' '.join(str(g) for g in groups['group'].to_numpy()[members]),
               'states': int(groups['reproducible'].to_numpy()[members].sum()),
               'stable': int(sizes[members][stable_group[members]].sum())}
        for r, name in enumerate(names):
            weight = np.bincount(tuples[members, r], weights=sizes[members],
                                 minlength=len(result.classes[name]))
            row[f'class_{name}'] = int(result.classes[name][int(np.argmax(weight))])
        rows.append(row)
    columns = ['merged', 'size', 'groups', 'states', 'stable'] + [f'class_{n}' for n in names]
    return pd.DataFrame(rows, columns=columns)


def _summary(result, names, groups, reproducibility, stable, merge, merge_table, warnings,
             parameters):
    n = len(stable)
    n_stable = int(np.count_nonzero(stable))
    states = groups[groups['reproducible']]
    consensus = result.consensus.set_index('group')
    state_rows = [{'group': int(g), 'size': int(consensus.loc[g, 'size']),
                   'merged': int(m), 'classes': {name: int(consensus.loc[g, f'class_{name}'])
                                                 for name in names}}
                  for g, m in zip(states['group'], states['merged'])]
    per_run = reproducibility.groupby('job', sort=False)
    return {
        'verdict': verdict_sentence(len(states), n_stable / n if n else 0.0),
        'reproducible_states': int(len(states)),
        'states': state_rows,
        'particles': int(n),
        'stable_particles': n_stable,
        'unstable_particles': int(n - n_stable),
        'stable_fraction': n_stable / n if n else 0.0,
        'reproduced_classes': {job: int((table['status'] == 'reproduced').sum())
                               for job, table in per_run},
        'classes': {job: int(len(table)) for job, table in per_run},
        'consensus_groups': int(len(groups)),
        'significant_groups': int(groups['significant'].sum()),
        'merged_groups': int(merge.n_merged),
        'merge_cut': float(merge.cut),
        'merge_criterion': merge.criterion,
        'parameters': parameters,
        'methods': METHODS,
        'warnings': warnings,
    }
