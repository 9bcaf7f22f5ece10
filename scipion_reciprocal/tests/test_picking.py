"""The classifier's Scipion-side helpers (core.picking) and figures (plotting.classifier)."""
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from scipion_reciprocal.core import picking
from scipion_reciprocal.plotting import classifier as plots

matplotlib.use('Agg')

BACKEND = Path(picking.__file__).resolve().parents[1] / 'backends' / 'classifier'


def test_file_names_match_the_backend():
    """The backend, loaded as it runs (from its folder, without the package), names its files
    as core.picking reads them."""
    names = ('MODEL_FILE', 'MODEL_INFO', 'HISTORY', 'TEST_REPORT', 'TEST_SCORES', 'SPLIT',
             'PICKS', 'REJECTED', 'PICK_SUMMARY', 'SCORE_MAPS', 'COORDINATES', 'STAR_SUFFIX',
             'PICK_COLUMNS')
    code = ('import json, sys; sys.path.insert(0, %r); import particle_classifier as p, '
            'classifier_io as io; print(json.dumps({n: getattr(p, n) for n in %r} | '
            '{"columns": [io.PARTICLE_COLUMNS, io.MICROGRAPH_COLUMNS]}))' % (str(BACKEND), names))
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env,
                          cwd=str(BACKEND.parent), check=True)
    backend = json.loads(done.stdout.strip().splitlines()[-1])
    for name in names:
        assert backend[name] == json.loads(json.dumps(getattr(picking, name))), name
    assert backend['columns'] == [list(picking.PARTICLE_COLUMNS), list(picking.MICROGRAPH_COLUMNS)]


def test_particle_and_micrograph_tables(tmp_path):
    path = tmp_path / 'particles.csv'
    picking.write_particle_table(path, ['a.mrcs', 'b.mrcs'], [1, 7], 1.5, labels=[1, 0])
    assert path.read_text().splitlines() == ['stack,index,label,pixel_size',
                                             'a.mrcs,1,1,1.5', 'b.mrcs,7,0,1.5']
    picking.write_particle_table(path, ['a.mrcs'], [3], [2.0])
    assert path.read_text().splitlines() == ['stack,index,pixel_size', 'a.mrcs,3,2.0']
    with pytest.raises(ValueError, match='1-based'):
        picking.write_particle_table(path, ['a.mrcs'], [0], 1.0)
    with pytest.raises(ValueError, match='labels'):
        picking.write_particle_table(path, ['a.mrcs'], [1], 1.0, labels=[2])

    mics = tmp_path / 'micrographs.csv'
    picking.write_micrograph_table(mics, ['m/1.mrc', 'm/2.mrc'], [1.0, 1.1], ['m 1', 'm2'])
    assert pd.read_csv(mics).to_dict('list') == {'path': ['m/1.mrc', 'm/2.mrc'],
                                                 'pixel_size': [1.0, 1.1], 'name': ['m 1', 'm2']}
    with pytest.raises(ValueError, match='not unique'):
        picking.write_micrograph_table(mics, ['a', 'b'], 1.0, ['x/1', 'x_1'])
    assert picking.file_stem('Movies/mic 001.mrc') == 'Movies_mic_001.mrc'
    assert picking.coordinates_star_path('out', 'a/b') == 'out/coordinates/a_b_classifier.star'


def test_roc_curve_by_hand():
    labels = [1, 0, 1, 0, 1]
    scores = [0.9, 0.8, 0.8, 0.3, 0.1]
    fpr, tpr, thresholds = picking.roc_curve(labels, scores)
    np.testing.assert_allclose(thresholds, [np.inf, 0.9, 0.8, 0.3, 0.1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 2 / 3, 1])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1, 1])
    # Pairs (good, bad): (0.9 > 0.8, 0.3), (0.8 = 0.8 -> 1/2, > 0.3), (0.1 < both): 3.5 of 6.
    assert picking.roc_auc(labels, scores) == pytest.approx(3.5 / 6)


def test_roc_auc_matches_pair_counting_and_sklearn():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + 0.3 * labels, 1)   # many ties
    pairs = [(1.0 if g > b else 0.5 if g == b else 0.0)
             for g, b in itertools.product(scores[labels == 1], scores[labels == 0])]
    assert picking.roc_auc(labels, scores) == pytest.approx(np.mean(pairs))
    assert picking.roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))


def test_confusion_and_threshold():
    labels = np.array([1, 1, 1, 0, 0])
    scores = np.array([0.9, 0.5, 0.2, 0.5, 0.1])
    np.testing.assert_array_equal(picking.confusion_matrix(labels, scores, 0.5), [[1, 1], [1, 2]])
    np.testing.assert_array_equal(picking.split_by_threshold(scores, 0.5),
                                  [True, True, False, True, False])


def test_matching_is_one_to_one_and_maximal():
    truth = np.array([[0.0, 0.0], [10.0, 0.0]])
    # Pick 0 is nearest to particle 1 but also within reach of particle 0; pick 1 only reaches
    # particle 1. Nearest-first matching would pair only one; the assignment pairs both.
    picks = np.array([[6.0, 0.0], [13.0, 0.0]])
    p, t = picking.match_picks(picks, truth, radius=6.0)
    assert sorted(zip(p.tolist(), t.tolist())) == [(0, 0), (1, 1)]
    # A duplicate pick of the same particle counts once; the radius is inclusive.
    p, t = picking.match_picks([[0.0, 0.0], [1.0, 0.0], [16.0, 0.0]], truth, radius=6.0)
    assert sorted(zip(p.tolist(), t.tolist())) == [(0, 0), (2, 1)]
    assert len(picking.match_picks(np.zeros((0, 2)), truth, 5.0)[0]) == 0


def test_evaluate_picks_per_micrograph():
    truth = pd.DataFrame({'micrograph': ['a', 'a', 'b'], 'x': [10, 50, 10], 'y': [10, 10, 10]})
    picks = pd.DataFrame({'micrograph': ['a', 'a', 'a', 'c'], 'x': [12, 49, 90, 5],
                          'y': [9, 30, 10, 5], 'score': [0.9, 0.8, 0.7, 0.6]})
    result = picking.evaluate_picks(picks, truth, radius=16)
    assert (result['n_picks'], result['n_true'], result['n_matched']) == (4, 3, 1)
    assert result['precision'] == pytest.approx(0.25)
    assert result['recall'] == pytest.approx(1 / 3)
    table = result['per_micrograph'].set_index('micrograph')
    assert table.loc['a', 'n_matched'] == 1 and table.loc['b', 'n_picks'] == 0
    assert table.loc['c', 'n_true'] == 0 and np.isnan(table.loc['c', 'recall'])
    result = picking.evaluate_picks(picks, truth, radius=25)
    assert result['n_matched'] == 2


def test_read_outputs(tmp_path):
    (tmp_path / 'scores.csv').write_text('row,score\n0,0.25\n1,0.75\n')
    np.testing.assert_allclose(picking.read_scores(tmp_path / 'scores.csv', 2), [0.25, 0.75])
    with pytest.raises(ValueError, match='2 scores for 3 particles'):
        picking.read_scores(tmp_path / 'scores.csv', 3)
    (tmp_path / 'bad.csv').write_text('row,score\n1,0.25\n0,0.75\n')
    with pytest.raises(ValueError, match='not 0..1 in order'):
        picking.read_scores(tmp_path / 'bad.csv')

    (tmp_path / picking.PICKS).write_text('micrograph,x,y,score\n007,10.5,20.0,0.9\n')
    picks = picking.read_picks(tmp_path)
    assert picks['micrograph'].tolist() == ['007'] and picks['x'].tolist() == [10.5]

    maps = tmp_path / picking.SCORE_MAPS
    maps.mkdir()
    np.save(maps / 'm1.npy', np.arange(6, dtype=np.float32).reshape(2, 3))
    (tmp_path / picking.PICK_SUMMARY).write_text(json.dumps({
        'box': 64, 'stride': 16, 'micrographs': [
            {'name': 'm1', 'scale': [4.0, 2.0], 'score_map': 'score_maps/m1.npy'}]}))
    scores, y, x = picking.read_score_map(tmp_path, 'm1')
    assert scores.shape == (2, 3)
    np.testing.assert_allclose(y, [128.0, 192.0])
    np.testing.assert_allclose(x, [64.0, 96.0, 128.0])
    with pytest.raises(ValueError, match='no score map'):
        picking.read_score_map(tmp_path, 'm2')


def test_read_coordinates_star(tmp_path):
    path = tmp_path / 'm_classifier.star'
    path.write_text('\n# version 30001\n\ndata_\n\nloop_\n_rlnCoordinateX #1\n'
                    '_rlnCoordinateY #2\n_rlnAutopickFigureOfMerit #3\n_rlnClassNumber #4\n'
                    '  10.00  20.50  0.900000  1\n  30.00  40.00  0.600000  1\n\n')
    x, y, score = picking.read_coordinates_star(path)
    np.testing.assert_allclose(x, [10, 30])
    np.testing.assert_allclose(y, [20.5, 40])
    np.testing.assert_allclose(score, [0.9, 0.6])


def test_figures_show_the_data():
    history = pd.DataFrame({'epoch': [1, 2, 3], 'loss': [0.7, 0.4, 0.3], 'acc': [0.5, 0.8, 0.9],
                            'val_loss': [0.6, 0.35, 0.4], 'val_acc': [0.6, 0.85, 0.8]})
    fig = plots.learning_curves_figure(history, kept_epoch=3)
    loss_ax = fig.axes[0]
    np.testing.assert_allclose(loss_ax.lines[1].get_ydata(), [0.6, 0.35, 0.4])
    assert loss_ax.lines[2].get_xdata()[0] == 2          # lowest validation loss
    assert loss_ax.lines[3].get_xdata()[0] == 3          # the weights kept

    labels = np.array([1, 1, 0, 0])
    scores = np.array([0.9, 0.4, 0.6, 0.1])
    fig = plots.roc_figure(labels, scores)
    assert 'AUC 0.750' in fig.axes[0].get_legend().get_texts()[0].get_text()
    fig = plots.confusion_figure(labels, scores)
    assert [t.get_text() for t in fig.axes[0].texts] == ['1\n50.0%'] * 4

    rng = np.random.default_rng(0)
    micrograph = rng.normal(size=(300, 400))
    picks = pd.DataFrame({'x': [50.0, 200.0], 'y': [60.0, 100.0], 'score': [0.9, 0.6]})
    rejected = pd.DataFrame({'x': [300.0], 'y': [250.0], 'score': [0.2]})
    fig = plots.picks_figure(micrograph, picks, box=32, rejected=rejected, truth=picks)
    circles = fig.axes[0].patches
    assert len(circles) == 3 and circles[1].center == (50.0, 60.0) and circles[1].radius == 16

    fig = plots.score_map_figure(rng.random((4, 5)), np.arange(4) * 16 + 32.0,
                                 np.arange(5) * 16 + 32.0, micrograph=micrograph)
    assert fig.axes[0].images[1].get_extent() == [24.0, 104.0, 88.0, 24.0]

    images = rng.normal(size=(30, 16, 16))
    gallery_scores = np.linspace(0, 1, 30)
    fig = plots.gallery_figure(images, gallery_scores, n=10, highest=False, columns=5)
    shown = [ax.get_title() for ax in fig.axes if ax.images]
    assert shown == [f'{s:.3f}' for s in gallery_scores[:10]]
    fig.canvas.draw()
