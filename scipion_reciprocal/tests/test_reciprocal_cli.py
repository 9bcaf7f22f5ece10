"""``scipion-reciprocal reciprocal`` end to end on simulated RELION jobs, and its errors."""
import json

import numpy as np
import pandas as pd
import pytest
import starfile

from scipion_reciprocal.cli import main
from scipion_reciprocal.formats.star import write_star
from scipion_reciprocal.tests.test_relion_jobs import write_job

N = 60


@pytest.fixture(scope='module')
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp('relion')
    rng = np.random.default_rng(7)
    states = np.repeat([0, 1, 2], [30, 20, 10])
    labels = {
        'Class3D/job085': states + 1,
        'Class3D/job086': np.where(rng.random(N) < 0.2, rng.integers(1, 4, N), 3 - states),
        'Class2D/job013': (states > 0).astype(int) + 1,
    }
    write_job(root, 'Class3D/job085', labels['Class3D/job085'])
    write_job(root, 'Class3D/job086', labels['Class3D/job086'], n_classes=4)    # class 4 empty
    write_job(root, 'Class2D/job013', labels['Class2D/job013'], kind='2D')
    (root / 'Class3D' / 'job087').mkdir()
    return root, {k.split('/')[1]: v for k, v in labels.items()}



def test_cli_writes_every_file(project, tmp_path, capsys):
    root, labels = project
    out = tmp_path / 'out'
    status = main(['reciprocal', '--relion_dir', str(root), '--jobs', '85,86 Class2D/job013',
                   '--outdir', str(out), '--min-fraction', '0.5', '--plots', 'all'])
    printed = capsys.readouterr().out
    assert status == 0
    assert '3 jobs: job085 (60 rows), job086 (60 rows), job013 (60 rows)' in printed
    assert str(out / 'counts_matrix.csv') in printed
    counts = pd.read_csv(out / 'counts_matrix.csv')
    assert list(counts.columns) == ['job1', 'job2', 'class1', 'class2', 'value']
    pair = counts[(counts.job1 == 85) & (counts.job2 == 86)]
    brute = [[int(np.sum((labels['job085'] == i) & (labels['job086'] == k))) for k in range(1, 5)]
             for i in range(1, 4)]
    assert pair.pivot(index='class1', columns='class2', values='value').to_numpy().tolist() == brute
    assert pair[pair.class2 == 4]['value'].tolist() == [0, 0, 0]       # empty class kept
    assert set(zip(counts.job1, counts.job2)) == {(85, 86), (86, 85), (85, 13), (13, 85),
                                                  (86, 13), (13, 86)}
    fractions = pd.read_csv(out / 'fraction_matrix.csv')
    row = fractions[(fractions.job1 == 13) & (fractions.job2 == 85) & (fractions.class1 == 2)]
    assert row['value'].round(6).tolist() == [0.0, round(20 / 30, 6), round(10 / 30, 6)]
    sankey = pd.read_csv(out / 'pysankey_input.csv')
    assert sankey['#particles'].sum() == 2 * N and sankey['id'].tolist() == list(range(len(sankey)))
    assert sankey['jobANo_class'].str.split('_').str[0].isin(['85', '86']).all()
    agreement = pd.read_csv(out / 'agreement.csv')
    assert agreement[['job1', 'job2']].values.tolist() == [['job085', 'job086'],
                                                           ['job085', 'job013'],
                                                           ['job086', 'job013']]
    groups = pd.read_csv(out / 'consensus_groups.csv')
    assert groups['size'].sum() == N and groups['size'].iloc[0] >= groups['size'].iloc[-1]
    assert len(pd.read_csv(out / 'consensus_membership.csv')) == N
    per_class = sorted(p.name for p in (out / 'per_class').iterdir())
    assert 'job085_class1.star' in per_class and 'job086_class4.star' not in per_class
    subset = starfile.read(out / 'per_class' / 'job013_class1.star')
    assert len(subset['particles']) == 30 and 'optics' in subset
    source = starfile.read(root / 'Class2D' / 'job013' / 'run_it003_data.star')['particles']
    # rows verbatim, the stability score appended as the last column
    assert subset['particles'].columns[-1] == 'rlnReciprocalStability'
    pd.testing.assert_frame_equal(subset['particles'].iloc[:, :-1],
                                  source.iloc[:30].reset_index(drop=True))
    assert (out / 'intersections' / 'job085_class1_vs_job013_class1.star').exists()
    plots = out / 'plots'
    for name in ('sankey_counts.png', 'sankey_fractions.png', 'sankey.html', 'agreement.png',
                 'heatmap_counts_job085_vs_job086.png', 'heatmap_fractions_job086_vs_job085.png',
                 'convergence_job085.png', 'class_slices_job085.png', 'class_slices_job013.png'):
        assert (plots / name).stat().st_size > 0, name
    page = (plots / 'sankey.html').read_text()
    assert '<svg' in page and 'http' not in page.replace('http://www.w3.org/2000/svg', '')
    assert 'job085 class 1 -&gt; job086 class' in page
    summary = (out / 'summary.txt').read_text()
    assert 'Reciprocal analysis of 3 classifications' in summary


@pytest.fixture(scope='module')
def simulated_states(tmp_path_factory):
    """3 states + 10% junk, 4 Class3D runs of 4 classes, 15% reassigned at random per run."""
    from scipion_reciprocal.simulate.consensus_runs import simulate_runs
    root = tmp_path_factory.mktemp('relion_states')
    sim = simulate_runs(900, 3, n_runs=4, flip_fraction=0.15, junk_fraction=0.1, seed=11)
    for r, labels in enumerate(sim.labels):
        write_job(root, f'Class3D/job{90 + r:03d}', labels, n_iterations=1)
    return root, sim


def test_cli_consensus_verdict(simulated_states, tmp_path, capsys):
    from scipy.stats import hypergeom
    root, sim = simulated_states
    out = tmp_path / 'out'
    assert main(['reciprocal', '--relion_dir', str(root), '--jobs', '90,91,92,93',
                 '--outdir', str(out), '--min-group-size', '5', '--min-overlap', '5000']) == 0
    printed = capsys.readouterr().out
    verdict = json.loads((out / 'verdict.json').read_text())
    assert verdict['reproducible_states'] == 3
    assert verdict['stable_particles'] + verdict['unstable_particles'] == 900
    assert verdict['reproduced_classes'] == {f'job{90 + r:03d}': 3 for r in range(4)}
    assert verdict['parameters']['class_maps_used']        # every class of every job has a map
    assert f'verdict: {verdict["verdict"]}' in printed and '3 reproducible states' in printed
    # significance: exact hypergeometric tails of the counts
    significance = pd.read_csv(out / 'significance.csv')
    assert list(significance.columns) == ['job1', 'job2', 'class1', 'class2', 'observed',
                                          'expected', 'enrichment', 'p_value', 'q_value']
    assert len(significance) == 6 * 16
    pair = significance[(significance.job1 == 90) & (significance.job2 == 93)]
    a, b = sim.labels[0], sim.labels[3]
    observed = [int(np.sum((a == i) & (b == k))) for i in range(1, 5) for k in range(1, 5)]
    assert pair['observed'].tolist() == observed
    sizes_a = np.bincount(a)[pair['class1']]
    sizes_b = np.bincount(b)[pair['class2']]
    np.testing.assert_allclose(pair['p_value'], hypergeom.sf(pair['observed'] - 1, 900, sizes_a,
                                                             sizes_b), rtol=1e-5, atol=1e-300)
    np.testing.assert_allclose(pair['expected'], sizes_a * sizes_b / 900, rtol=1e-5)
    reproducibility = pd.read_csv(out / 'reproducibility.csv')
    assert list(reproducibility.columns[:6]) == ['job', 'class', 'size', 'reproduced_in',
                                                 'n_runs', 'best_matches']
    for r, junk in enumerate(sim.junk_classes):
        row = reproducibility[(reproducibility.job == f'job{90 + r:03d}') &
                              (reproducibility['class'] == junk)]
        assert row['reproduced_in'].tolist() == [0] and row['status'].tolist() == ['not reproduced']
    groups = pd.read_csv(out / 'consensus_groups.csv')
    for column in ('expected', 'enrichment', 'p_value', 'q_value', 'significant', 'merged'):
        assert column in groups.columns
    assert groups['reproducible'].sum() == 3
    membership = pd.read_csv(out / 'consensus_membership.csv')
    assert list(membership.columns[-2:]) == ['stability', 'merged']
    stable = starfile.read(out / 'stable_particles.star')
    unstable = starfile.read(out / 'unstable_particles.star')['particles']
    assert len(stable['particles']) == verdict['stable_particles'] and 'optics' in stable
    assert len(unstable) == verdict['unstable_particles']
    assert (stable['particles']['rlnReciprocalStability'] >= 0.75).all()
    # the stable particles are the consistently classified state particles (and junk
    # particles that landed in one state's classes in every run)
    rows = membership['row_job090'].to_numpy()
    expected_stable = np.sort(rows[(membership['stability'] >= 0.75) &
                                   membership['group'].isin(groups.loc[groups['significant'],
                                                                       'group'])])
    source = starfile.read(root / 'Class3D' / 'job090' / 'run_it001_data.star')['particles']
    assert stable['particles']['rlnImageName'].tolist() == \
        source['rlnImageName'].iloc[expected_stable].tolist()
    real = sim.states[expected_stable] >= 0
    assert np.array_equal(np.sort(expected_stable[real]), np.flatnonzero(sim.consistent))
    per_class = starfile.read(out / 'per_class' / 'job091_class1.star')['particles']
    by_row = membership.set_index('row_job091')['stability']
    members = np.flatnonzero(sim.labels[1] == 1)
    np.testing.assert_allclose(per_class['rlnReciprocalStability'], by_row.loc[members], atol=1e-6)
    for name in ('enrichment.png', 'merge_dendrogram.png', 'stability.png', 'sankey_groups.png'):
        assert (out / 'plots' / name).stat().st_size > 10000, name
    listed = {e['path'] for e in json.loads((out / 'manifest.json').read_text())['files']}
    assert {'verdict.json', 'significance.csv', 'reproducibility.csv', 'merged_groups.csv',
            'merge_linkage.csv', 'stable_particles.star', 'unstable_particles.star',
            'plots/enrichment.png', 'plots/merge_dendrogram.png'} <= listed
    summary = (out / 'summary.txt').read_text()
    assert summary.startswith(f'Verdict: {verdict["verdict"]}')
    assert 'group p value: exact conditional hypergeometric test' in summary


def test_cli_only_the_stable_particles(simulated_states, tmp_path, capsys):
    """A second analysis of the first one's stable particles: every one of them is stable."""
    root, sim = simulated_states
    first = tmp_path / 'first'
    jobs = ['--relion_dir', str(root), '--jobs', '90,91,92,93', '--min-group-size', '5',
            '--no-plots', '--no-subsets']
    assert main(['reciprocal', *jobs, '--outdir', str(first)]) == 0
    stable = json.loads((first / 'verdict.json').read_text())['stable_particles']
    second = tmp_path / 'second'
    assert main(['reciprocal', *jobs, '--outdir', str(second), '--only-particles',
                 str(first / 'stable_particles.star')]) == 0
    assert pd.read_csv(second / 'jobs.csv')['rows_kept'].tolist() == [stable] * 4
    again = json.loads((second / 'verdict.json').read_text())
    assert again['stable_particles'] == stable and again['reproducible_states'] == 3
    assert f'{900 - stable} of 900 rows are not among the {stable} chosen particles' in \
        (second / 'summary.txt').read_text()
    status = main(['reciprocal', *jobs, '--outdir', str(tmp_path / 'bad'), '--only-particles',
                   str(tmp_path / 'none.star')])
    assert status == 2 and 'none.star: file not found' in capsys.readouterr().err


def test_cli_verdict_options(simulated_states, tmp_path, capsys):
    root, _ = simulated_states
    status = main(['reciprocal', '--relion_dir', str(root), '--jobs', '90,91',
                   '--outdir', str(tmp_path / 'bad'), '--jaccard-threshold', '1.5'])
    err = capsys.readouterr().err
    assert status == 2 and err == ('scipion-reciprocal reciprocal: error: --jaccard-threshold '
                                   'must be between 0 and 1 (got 1.5)\n')
    assert not (tmp_path / 'bad').exists()
    out = tmp_path / 'plain'
    assert main(['reciprocal', '--relion_dir', str(root), '--jobs', '90,91', '--outdir', str(out),
                 '--no-verdict', '--no-plots', '--no-subsets']) == 0
    assert not (out / 'verdict.json').exists() and not (out / 'stable_particles.star').exists()
    assert 'p_value' not in pd.read_csv(out / 'consensus_groups.csv').columns
    strict = tmp_path / 'strict'
    assert main(['reciprocal', '--relion_dir', str(root), '--jobs', '90,91,92', '--outdir',
                 str(strict), '--jaccard-threshold', '0.99', '--no-plots', '--no-subsets']) == 0
    assert json.loads((strict / 'verdict.json').read_text())['reproducible_states'] == 0


def test_cli_draws_the_summary_figures_by_default(project, tmp_path):
    root, _ = project
    out = tmp_path / 'out'
    assert main(['reciprocal', '--relion_dir', str(root), '--jobs', '85,86,13',
                 '--outdir', str(out), '--no-subsets']) == 0
    assert sorted(p.name for p in (out / 'plots').iterdir()) == sorted(
        ['sankey_counts.png', 'sankey_fractions.png', 'sankey.html', 'agreement.png',
         'enrichment.png', 'merge_dendrogram.png', 'stability.png', 'sankey_groups.png'] +
        [f'{kind}_job{n}.png' for kind in ('convergence', 'class_slices') for n in ('085', '086', '013')])
    manifest = json.loads((out / 'manifest.json').read_text())
    assert {f['path'] for f in manifest['files']} >= {'plots/sankey.html', 'plots/agreement.png',
                                                      'plots/convergence_job013.png'}
    # every heatmap's numbers are in the wide matrices
    assert len(list((out / 'matrices').glob('*.csv'))) == 3 * 6


def test_cli_writes_the_intersections_that_hold_a_state_unless_asked_for_all(project, tmp_path,
                                                                            capsys):
    """By default the intersections of at least 10 particles and 10% of one of the two
    classes (the protocol's defaults); --all-intersections: every class pair sharing one."""
    root, labels = project
    sizes = {job: np.bincount(cls) for job, cls in labels.items()}
    shared, kept = set(), set()
    for a, b in (('job085', 'job086'), ('job085', 'job013'), ('job086', 'job013')):
        for i, k in zip(labels[a], labels[b]):
            shared.add(f'{a}_class{i}_vs_{b}_class{k}.star')
        for (i, k), count in zip(*np.unique(np.stack([labels[a], labels[b]], axis=1), axis=0,
                                           return_counts=True)):
            if count >= 10 and max(count / sizes[a][i], count / sizes[b][k]) >= 0.1:
                kept.add(f'{a}_class{i}_vs_{b}_class{k}.star')
    assert 0 < len(kept) < len(shared)
    jobs = ['reciprocal', '--relion_dir', str(root), '--jobs', '85,86,13', '--no-plots']
    assert main([*jobs, '--outdir', str(tmp_path / 'default')]) == 0
    printed = capsys.readouterr().out
    assert {p.name for p in (tmp_path / 'default' / 'intersections').iterdir()} == kept
    note = (f'intersections: {len(kept)} of the {len(shared)} class pairs that share particles, '
            f'those of at least 10 particles holding at least 0.1 of one of the two classes; a '
            f'minimum of 1 particle and 0 of a class keeps them all (command line: '
            f'--all-intersections)')
    assert note in printed and note in (tmp_path / 'default' / 'summary.txt').read_text()
    assert main([*jobs, '--outdir', str(tmp_path / 'all'), '--all-intersections']) == 0
    assert {p.name for p in (tmp_path / 'all' / 'intersections').iterdir()} == shared
    assert (f'intersections: {len(shared)} of the {len(shared)} class pairs that share '
            f'particles, those of at least 1 particle holding at least 0 of one of the two '
            f'classes\n') in (tmp_path / 'all' / 'summary.txt').read_text()


def test_cli_jobs_dir_without_subsets_or_plots(project, tmp_path, capsys):
    root, _ = project
    out = tmp_path / 'out'
    assert main(['reciprocal', '--class3d_dir', str(root / 'Class3D'), '--jobs', '86 85',
                 '--outdir', str(out), '--no-subsets', '--no-plots', '--iteration', '2']) == 0
    assert not (out / 'per_class').exists() and not (out / 'plots').exists()
    assert pd.read_csv(out / 'jobs.csv')['job'].tolist() == ['job086', 'job085']
    assert 'run_it002_data.star' in (out / 'summary.txt').read_text()


@pytest.mark.parametrize('jobs, message', [
    ('85,99', 'job job099: no folder */job099 in the project'),
    ('85,87', 'job Class3D/job087: no iteration files'),
    ('85', 'needs at least two classifications (got 1: job085)'),
    ('85,abc', "'abc' is not a job number"),
])
def test_cli_errors(project, tmp_path, capsys, jobs, message):
    root, _ = project
    status = main(['reciprocal', '--relion_dir', str(root), '--jobs', jobs,
                   '--outdir', str(tmp_path / 'out')])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith('scipion-reciprocal reciprocal: error: ') and message in err
    assert err.count('\n') == 1


def test_cli_star_without_class_number(project, tmp_path, capsys):
    root, _ = project
    job = tmp_path / 'Class3D' / 'job001'
    job.mkdir(parents=True)
    data = starfile.read(root / 'Class3D' / 'job085' / 'run_it003_data.star')
    write_star(job / 'run_it001_data.star',
               {'optics': data['optics'], 'particles': data['particles'].drop(columns='rlnClassNumber')})
    (tmp_path / 'Class3D' / 'job002').symlink_to(root / 'Class3D' / 'job085')
    status = main(['reciprocal', '--class3d_dir', str(tmp_path / 'Class3D'), '--jobs', '1,2',
                   '--outdir', str(tmp_path / 'out'), '--no-plots'])
    err = capsys.readouterr().err
    assert status == 2
    assert 'job001/run_it001_data.star: data_particles has no column _rlnClassNumber' in err


def test_output_piped_into_head_ends_quietly(project, tmp_path):
    """``scipion-reciprocal reciprocal ... | head -1``: no BrokenPipe traceback (``true``
    closes the pipe at once, as ``head`` does after its line)."""
    import subprocess
    import sys
    root, _ = project
    command = (f'{sys.executable} -m scipion_reciprocal.cli reciprocal --relion_dir {root} '
               f'--jobs 85,86 --outdir {tmp_path / "out"} --no-plots | true')
    done = subprocess.run(['bash', '-o', 'pipefail', '-c', command], capture_output=True,
                          text=True)
    assert done.stderr == '', done.stderr
    assert done.returncode == 0
    assert (tmp_path / 'out' / 'manifest.json').exists()
