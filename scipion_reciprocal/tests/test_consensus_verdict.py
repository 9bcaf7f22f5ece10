"""Consensus verdict: exact significance, reproducibility, merging and stability on hand-built
cases and on simulated states with label noise and junk."""
import numpy as np
import pandas as pd
import pytest
from scipy.stats import hypergeom
from sklearn.metrics import adjusted_rand_score, roc_auc_score

from scipion_reciprocal.core.consensus_merge import (flow_similarity, group_distances,
                                                     map_correlations, map_similarity,
                                                     merge_groups)
from scipion_reciprocal.core.consensus_significance import (benjamini_hochberg,
                                                            group_significance,
                                                            hypergeom_upper_tail,
                                                            intersection_significance,
                                                            significance_table)
from scipion_reciprocal.core.reciprocal import classification_from_dataframe, reciprocal_analysis
from scipion_reciprocal.core.reproducibility import (mutual_best, reproduced_pairs,
                                                     reproducibility_table)
from scipion_reciprocal.core.verdict import consensus_verdict, verdict_sentence
from scipion_reciprocal.simulate.consensus_runs import JUNK, simulate_runs

COUNTS_AB = np.array([[2, 1, 0], [0, 2, 2], [1, 0, 2]])   # 10 particles (test_reciprocal.py)


def analysis(labels, min_group_size=1, **kw):
    ids = np.arange(len(labels[0]))
    runs = [classification_from_dataframe(pd.DataFrame({'id': ids, 'class': cls}),
                                          f'job{r + 1:03d}', key='id')
            for r, cls in enumerate(labels)]
    return reciprocal_analysis(runs, min_group_size=min_group_size, **kw)


# ------------------------------------------------------------------ significance

def test_upper_tail_equals_scipy_on_every_small_case():
    for total in range(1, 13):      # SciPy gives NaN for 0 particles
        for good in range(total + 1):
            for draws in range(total + 1):
                x = np.arange(-1, min(good, draws) + 3)
                np.testing.assert_allclose(hypergeom_upper_tail(x, total, good, draws),
                                           hypergeom.sf(x - 1, total, good, draws),
                                           rtol=1e-12, atol=1e-15)


def test_upper_tail_equals_scipy_on_large_cases():
    rng = np.random.default_rng(4)
    for total in (1000, 30000, 1000000):
        good = rng.integers(0, total + 1, 200)
        draws = rng.integers(0, total + 1, 200)
        mean = good * draws / total
        x = np.maximum(0, (mean + rng.normal(0, 4, 200) * np.sqrt(mean + 1)).astype(np.int64))
        ours, theirs = hypergeom_upper_tail(x, total, good, draws), hypergeom.sf(x - 1, total,
                                                                                good, draws)
        keep = theirs > 1e-250
        np.testing.assert_allclose(ours[keep], theirs[keep], rtol=1e-7)
        assert np.all(ours[~keep] < 1e-240)


def test_intersection_significance_hand_built():
    expected, enrichment, p_value = intersection_significance(COUNTS_AB)
    size_a, size_b = COUNTS_AB.sum(axis=1), COUNTS_AB.sum(axis=0)       # [3, 4, 3], [3, 3, 4]
    np.testing.assert_array_equal(expected, np.outer(size_a, size_b) / 10)
    assert expected[1, 2] == 1.6 and enrichment[1, 2] == 2 / 1.6 and enrichment[0, 2] == 0.0
    assert enrichment[0, 0] == 2 / 0.9
    np.testing.assert_allclose(p_value, hypergeom.sf(COUNTS_AB - 1, 10, size_a[:, None],
                                                     size_b[None, :]), rtol=1e-12)
    # P(X >= 2) with 3 of 10 marked, 3 drawn: (C(3,2) C(7,1) + C(3,3)) / C(10,3) = 22/120
    assert p_value[0, 0] == pytest.approx(22 / 120, rel=1e-12)
    assert p_value[0, 2] == 1.0


def test_benjamini_hochberg_by_hand():
    np.testing.assert_allclose(benjamini_hochberg([0.01, 0.04, 0.03, 0.005]),
                               [0.02, 0.04, 0.04, 0.02])
    # a larger p-value later in the order caps nothing: q stays monotone in p
    np.testing.assert_allclose(benjamini_hochberg([0.01, 0.02, 0.5, 0.03]),
                               [0.04, 0.04, 0.5, 0.04])
    np.testing.assert_allclose(benjamini_hochberg([0.9, 0.8]), [0.9, 0.9])
    assert benjamini_hochberg([]).shape == (0,)
    with pytest.raises(ValueError, match='NaN'):
        benjamini_hochberg([0.1, np.nan])


def test_significance_table_q_values_over_all_cells_of_all_pairs():
    a, b, c = [1, 1, 1, 2, 2, 2, 2, 3, 3, 3], [1, 1, 2, 2, 2, 3, 3, 3, 3, 1], \
        [2, 2, 2, 1, 1, 1, 1, 1, 2, 2]
    result = analysis([a, b, c])
    table = significance_table(result.names, {'job001': 1, 'job002': 2, 'job003': 3},
                               result.classes, result.count_matrix, 10)
    assert list(table.columns) == ['job1', 'job2', 'class1', 'class2', 'observed', 'expected',
                                   'enrichment', 'p_value', 'q_value']
    assert table[['job1', 'job2']].drop_duplicates().values.tolist() == [[1, 2], [1, 3], [2, 3]]
    assert len(table) == 9 + 6 + 6
    first = table[(table.job1 == 1) & (table.job2 == 2)]
    assert first['observed'].tolist() == COUNTS_AB.ravel().tolist()
    p = hypergeom.sf(table['observed'] - 1, 10,
                     [result.sizes(f'job00{j}')[k] for j, k in zip(table.job1, table.class1)],
                     [result.sizes(f'job00{j}')[k] for j, k in zip(table.job2, table.class2)])
    np.testing.assert_allclose(table['p_value'], p, rtol=1e-12)
    m = len(p)
    order = np.argsort(p, kind='stable')
    by_hand = np.minimum.accumulate((p[order] * m / np.arange(1, m + 1))[::-1])[::-1]
    q = np.empty(m)
    q[order] = np.minimum(by_hand, 1)
    np.testing.assert_allclose(table['q_value'], q, rtol=1e-12)


def test_group_significance_two_runs_is_the_intersection_test():
    tuples = np.array([[i, j] for i in range(3) for j in range(3) if COUNTS_AB[i, j]])
    sizes = COUNTS_AB[tuples[:, 0], tuples[:, 1]]
    table = group_significance(tuples, sizes, [COUNTS_AB.sum(axis=1), COUNTS_AB.sum(axis=0)], 10)
    _, _, p = intersection_significance(COUNTS_AB)
    np.testing.assert_allclose(table['p_value'], p[tuples[:, 0], tuples[:, 1]], rtol=1e-12)
    np.testing.assert_allclose(table['expected'],
                               COUNTS_AB.sum(axis=1)[tuples[:, 0]] *
                               COUNTS_AB.sum(axis=0)[tuples[:, 1]] / 10)
    np.testing.assert_allclose(table['q_value'], benjamini_hochberg(table['p_value']))


def test_group_significance_three_runs_by_hand():
    # 12 particles, 3 runs of 2 classes.
    a = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    b = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0])
    c = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0])
    tuples, sizes = np.unique(np.column_stack([a, b, c]), axis=0, return_counts=True)
    class_sizes = [np.bincount(x) for x in (a, b, c)]
    table = group_significance(tuples, sizes, class_sizes, 12)
    g = tuples.tolist().index([0, 0, 0])                # 4 particles: 0, 1, 2, 3
    assert sizes[g] == 4
    assert table['expected'][g] == pytest.approx(12 * (6 / 12) * (6 / 12) * (7 / 12))
    # run a given (b, c) = (0, 0): 4 particles in both, a's class 0 holds 6 of 12
    # run b given (a, c) = (0, 0): 5 particles, b's class 0 holds 6
    # run c given (a, b) = (0, 0): 5 particles, c's class 0 holds 7
    p = [hypergeom.sf(3, 12, 4, 6), hypergeom.sf(3, 12, 5, 6), hypergeom.sf(3, 12, 5, 7)]
    assert table['p_value'][g] == pytest.approx(max(p), rel=1e-12)
    assert table['weakest_run'][g] == int(np.argmax(p))


# ------------------------------------------------------------------ reproducibility

def test_mutual_best_and_reproduced_pairs():
    jac = np.array([[0.5, 0.2, 0.0], [0.0, 0.4, 1 / 3], [0.2, 0.0, 0.4]])
    np.testing.assert_array_equal(mutual_best(jac), [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    q = np.array([[0.01, 1, 1], [1, 0.2, 1], [1, 1, 0.04]])
    np.testing.assert_array_equal(reproduced_pairs(jac, q, 0.45, 0.05), [[1, 0, 0], [0, 0, 0],
                                                                          [0, 0, 0]])
    np.testing.assert_array_equal(reproduced_pairs(jac, q, 0.3, 0.05), [[1, 0, 0], [0, 0, 0],
                                                                         [0, 0, 1]])
    # class 2 of b is nobody's best: its row is empty
    assert not mutual_best(np.array([[0.9, 0.8], [0.7, 0.1]]))[:, 1].any()


def test_reproducibility_table_counts_other_runs():
    classes = {'a': np.array([1, 2]), 'b': np.array([5, 6]), 'c': np.array([1, 2])}
    jac = {('a', 'b'): [[0.9, 0.1], [0.1, 0.2]], ('a', 'c'): [[0.8, 0.0], [0.0, 0.7]],
           ('b', 'c'): [[0.6, 0.1], [0.0, 0.1]]}
    reproduced = {}
    for (x, y), m in list(jac.items()):
        jac[(y, x)] = np.transpose(m)
        reproduced[(x, y)] = np.asarray(m) >= 0.5
        reproduced[(y, x)] = reproduced[(x, y)].T
    table = reproducibility_table(['a', 'b', 'c'], classes,
                                  {k: [10, 20] for k in classes}, lambda x, y: jac[(x, y)],
                                  reproduced)
    assert table['reproduced_in'].tolist() == [2, 1, 2, 0, 2, 1]
    assert table['n_runs'].tolist() == [2] * 6
    assert table['status'].tolist() == ['reproduced', 'partly reproduced', 'reproduced',
                                        'not reproduced', 'reproduced', 'partly reproduced']
    assert table['best_matches'].tolist()[:2] == ['b:5;c:1', 'b:6;c:2']


def test_empty_class_has_no_best_match():
    """A class of the model that holds no particle (RELION keeps its map) matches nothing."""
    a = np.repeat([1, 2], [30, 20])
    runs = [classification_from_dataframe(pd.DataFrame({'id': np.arange(50), 'class': a}),
                                          name, key='id', class_ids=ids)
            for name, ids in (('job001', [1, 2, 3]), ('job002', [1, 2]))]
    table = consensus_verdict(reciprocal_analysis(runs)).reproducibility
    assert table['best_matches'].tolist() == ['job002:1', 'job002:2', 'job002:',
                                              'job001:1', 'job001:2']
    assert table['size'].tolist() == [30, 20, 0, 30, 20]
    assert table['status'].tolist()[2] == 'not reproduced'


# ------------------------------------------------------------------ merging

def test_flow_similarity_sees_a_split_class():
    # 3 states of 100; run 2 splits state 0 into classes 1 and 4 (50 each).
    states = np.repeat([0, 1, 2], 100)
    run1 = states + 1
    run2 = np.where(states == 0, np.where(np.arange(300) % 2 == 0, 1, 4), states + 1)
    result = analysis([run1, run2])
    similarity = flow_similarity(result.names, result.classes, result.count_matrix)['job002']
    # classes 1 and 4 of job002 send their excess to job001 class 1 alone
    assert similarity[0, 3] == pytest.approx(1.0)
    assert similarity[0, 1] == 0.0 and similarity[1, 2] == 0.0
    # by hand: class 1 of job002 sends 50/50 to class 1 (share 100/300): excess 2/3
    counts = result.count_matrix('job002', 'job001')
    f = counts / counts.sum(axis=1, keepdims=True)
    excess = np.maximum(f - counts.sum(axis=0) / 300, 0)
    assert excess[0].tolist() == pytest.approx([2 / 3, 0, 0])
    merge = merge_groups(group_distances([[0, 0], [1, 1], [2, 2], [0, 3]],
                                         [flow_similarity(result.names, result.classes,
                                                          result.count_matrix)[n]
                                          for n in result.names]), [60, 100, 90, 60])
    assert merge.labels.tolist() == [1, 2, 3, 1]      # merged groups numbered by size
    assert merge.n_merged == 3


def test_merge_cut_at_the_largest_gap():
    # two pairs at distance 0.1, pairs 0.9 apart: two merged groups
    d = np.array([[0, 0.1, 0.9, 0.9], [0.1, 0, 0.9, 0.9], [0.9, 0.9, 0, 0.1],
                  [0.9, 0.9, 0.1, 0]])
    merge = merge_groups(d, [10, 10, 30, 30])
    assert merge.labels.tolist() == [2, 2, 1, 1] and merge.cut == pytest.approx(0.5)
    # all far apart: nothing merges (largest gap from 0 to the first merge)
    far = np.full((3, 3), 0.8) - 0.8 * np.eye(3)
    assert merge_groups(far, [1, 2, 3]).labels.tolist() == [3, 2, 1]
    # all close: everything merges (largest gap from the last merge to 1)
    near = np.full((3, 3), 0.1) - 0.1 * np.eye(3)
    assert merge_groups(near, [1, 2, 3]).labels.tolist() == [1, 1, 1]
    assert merge_groups(near, [1, 2, 3], cut=0.05).labels.tolist() == [3, 2, 1]
    assert merge_groups(np.zeros((1, 1)), [5]).labels.tolist() == [1]
    assert merge_groups(np.zeros((0, 0)), []).n_merged == 0


def test_map_similarity():
    maps = np.zeros((3, 8, 8, 8))
    maps[0, 2:4, 2:4, 2:4] = 1
    maps[1] = maps[0]
    maps[1, 4, 4, 4] = 1
    maps[2, 4:6, 4:6, 4:6] = 1
    corr = map_correlations(maps)
    np.testing.assert_allclose(np.diag(corr), 1.0)
    assert corr[0, 1] > 0.9 and corr[0, 2] < 0
    similarity = map_similarity(corr)
    assert similarity[0, 2] == 0.0 and similarity[0, 1] == pytest.approx(
        1 - (1 - corr[0, 1]) / (1 - corr[0, 2]))


# ------------------------------------------------------------------ the verdict

@pytest.mark.parametrize('n_states,n,flip,seed', [(2, 20000, 0.15, 0), (3, 20000, 0.15, 1),
                                                 (5, 20000, 0.15, 2), (3, 30000, 0.10, 3)])
def test_verdict_on_simulated_states_with_noise_and_junk(n_states, n, flip, seed):
    """K true states, 4 runs of K+1 classes, 15% reassigned at random per run, junk
    particles reassigned at random in every run (the runs' junk classes). The last case is
    the one on which Xmipp's consensus-classes elbow criteria suggest 23 to 98 merged groups
    (3 states, 30,000 particles, 10% junk, 10% reassigned per run)."""
    sim = simulate_runs(n, n_states, n_runs=4, flip_fraction=flip, junk_fraction=0.1,
                        seed=seed)
    result = analysis(sim.labels, min_group_size=10)
    verdict = consensus_verdict(result)
    assert verdict.summary['reproducible_states'] == n_states
    table = verdict.reproducibility
    for r, junk in enumerate(sim.junk_classes):
        row = table[(table['job'] == f'job{r + 1:03d}') & (table['class'] == junk)]
        assert row['status'].tolist() == ['not reproduced'] and row['reproduced_in'].item() == 0
    assert verdict.summary['reproduced_classes'] == {f'job{r + 1:03d}': n_states
                                                     for r in range(4)}
    # the reproducible states are the states' classes in every run
    states = {tuple(s['classes'].values()) for s in verdict.summary['states']}
    assert states == {tuple(int(c[s]) for c in sim.state_classes) for s in range(n_states)}
    truth = sim.states[result.assignments['row_job001'].to_numpy()]
    merged = verdict.merged > 0
    ari = adjusted_rand_score(truth[merged], verdict.merged[merged])
    auc = roc_auc_score(sim.consistent[result.assignments['row_job001'].to_numpy()],
                        verdict.stability)
    print(f'\nK={n_states}: merged groups ARI {ari:.4f}, stability ROC AUC {auc:.4f}')
    assert ari >= 0.95 and auc >= 0.95
    assert verdict.summary['stable_particles'] + verdict.summary['unstable_particles'] == n
    # merged groups: the states, and at most the junk classes' own group
    assert n_states <= verdict.summary['merged_groups'] <= n_states + 1
    # stable = consistent state particles (and the few junk particles that landed in one
    # state's classes in all four runs)
    consistent = sim.consistent[result.assignments['row_job001'].to_numpy()]
    assert np.array_equal(verdict.stable[truth != JUNK], consistent[truth != JUNK])


def test_verdict_split_state_is_one_merged_group_and_one_state():
    """The demo's mapping: job086 splits state 2 into classes 3 and 4."""
    rng = np.random.default_rng(0)
    states = rng.integers(0, 3, 3000)
    run1 = states + 1
    run2 = np.where(states == 2, 3 + (rng.random(3000) < 0.5), states + 1)
    run3 = np.array([3, 1, 2])[states]
    result = analysis([run1, run2, run3], min_group_size=10)
    verdict = consensus_verdict(result)
    assert verdict.summary['reproducible_states'] == 3
    assert verdict.summary['significant_groups'] == 4 and verdict.summary['merged_groups'] == 3
    assert adjusted_rand_score(states[result.assignments['row_job001']], verdict.merged) == 1.0
    table = verdict.reproducibility.set_index(['job', 'class'])
    statuses = sorted(table.loc[('job002', c), 'status'] for c in (3, 4))
    # the half that is not job085 class 3's best match is nobody's best match
    assert statuses == ['not reproduced', 'reproduced']
    assert verdict.sentence == verdict_sentence(3, verdict.stable.mean())


def test_verdict_of_independent_runs_finds_nothing():
    rng = np.random.default_rng(5)
    labels = [rng.integers(1, 5, 4000) for _ in range(3)]
    verdict = consensus_verdict(analysis(labels))
    assert verdict.summary['reproducible_states'] == 0
    assert verdict.summary['stable_particles'] == 0
    assert (verdict.significance['q_value'] > 0.05).all()
    assert verdict.sentence == '0 reproducible states; 0% of particles stable'


def test_a_run_with_one_class_is_named_in_a_warning():
    """Two identical runs and one with every particle in one class: nothing can be
    reproduced in every run, and the verdict says which run is to blame."""
    same = np.repeat([1, 2, 3], [100, 60, 40])
    result = analysis([same, same, np.ones(200, dtype=int)])
    verdict = consensus_verdict(result)
    assert verdict.summary['reproducible_states'] == 0
    assert (verdict.groups['p_value'] == 1.0).all()
    # the two identical runs reproduce each other's classes
    assert verdict.reproducibility['reproduced_in'].tolist() == [1, 1, 1, 1, 1, 1, 0]
    warning = ('job003: all its particles are in one class: none of its classes can be '
               'reproduced, so no consensus group is significant and no particle stable')
    assert [w for w in result.warnings if 'one class' in w] == [verdict.summary['warnings'][0]]
    assert verdict.summary['warnings'][0].startswith(warning)
    assert consensus_verdict(analysis([same, same])).summary['warnings'] == []


def test_verdict_parameters_are_checked():
    result = analysis([[1, 2, 1, 2], [1, 2, 2, 1]])
    for bad in ({'alpha': 1.5}, {'jaccard_threshold': -0.1}, {'stability_threshold': 2},
                {'merge_distance': 1.2}):
        with pytest.raises(ValueError, match='between 0 and 1'):
            consensus_verdict(result, **bad)
