"""The TensorFlow particle classifier backend, run for real in its own environment.

The numpy helpers (``backends/classifier/imaging.py``) are tested in-process. Everything else
runs ``particle_classifier.py`` as the protocols do: a subprocess in the classifier environment
(``SCIPION_RECIPROCAL_CLASSIFIER_PYTHON``, or ``$SCIPION_SOFTWARE/em/classifier-2.21.0/env``,
or the checkout's ``.scipion-home/software/em/classifier-2.21.0/env``), on simulated
micrographs with particles, ice blobs and a carbon edge. Those tests are skipped when the
environment is not installed.
"""
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scipion_reciprocal.backends.classifier import imaging
from scipion_reciprocal.core import picking
from scipion_reciprocal.environments import CLASSIFIER, clean_environ
from scipion_reciprocal.formats.mrc import write_map, write_stack
from scipion_reciprocal.simulate.micrographs import good_bad_particle_sets, simulate_micrographs
from scipion_reciprocal.simulate.molecule import molecule_maps

PROGRAM = Path(imaging.__file__).with_name('particle_classifier.py')
REPO = Path(__file__).resolve().parents[2]
BOX = 32            # particle box and working box of the main model, pixels at 4 Å
PIXEL = 4.0


def _classifier_python():
    """The classifier environment's python, or None when it is not installed."""
    explicit = os.environ.get('SCIPION_RECIPROCAL_CLASSIFIER_PYTHON')
    if explicit:
        return explicit if Path(explicit).exists() else None
    software = os.environ.get('SCIPION_SOFTWARE')
    roots = [Path(software) / 'em'] if software else []
    roots.append(REPO / '.scipion-home' / 'software' / 'em')
    for root in roots:
        if CLASSIFIER.marker(root).exists():
            return str(CLASSIFIER.prefix(root) / 'bin' / 'python')
    return None


PYTHON = _classifier_python()
needs_tf = pytest.mark.skipif(
    PYTHON is None, reason='classifier environment (TensorFlow) not installed: set '
    'SCIPION_RECIPROCAL_CLASSIFIER_PYTHON or run `scipion-reciprocal install-backend classifier`')


def run_backend(*args, cwd=None):
    """Run the backend on the CPU with two threads; return the CompletedProcess."""
    env = clean_environ()
    env['CUDA_VISIBLE_DEVICES'] = ''
    command = [PYTHON, str(PROGRAM), *[str(a) for a in args], '--threads', '2']
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def error_line(result):
    """The backend's one-line error (the last line of stderr)."""
    return result.stderr.strip().splitlines()[-1]


# ----------------------------------------------------------------------- simulated data

def _write_particles(folder, sets, name, extra_bad=None):
    """Write good and bad stacks and a particle table; returns the table path."""
    good, bad = sets.good.images, sets.bad.images
    if extra_bad is not None:
        bad = np.concatenate([bad, extra_bad])
    write_stack(folder / f'{name}_good.mrcs', good, sets.good.pixel_size)
    write_stack(folder / f'{name}_bad.mrcs', bad, sets.bad.pixel_size)
    table = folder / f'{name}.csv'
    picking.write_particle_table(
        table, [folder / f'{name}_good.mrcs'] * len(good)
        + [folder / f'{name}_bad.mrcs'] * len(bad),
        np.r_[np.arange(1, len(good) + 1), np.arange(1, len(bad) + 1)], sets.good.pixel_size,
        labels=np.r_[np.ones(len(good), int), np.zeros(len(bad), int)])
    return table


def _carbon_boxes(sim, per_micrograph, box, rng):
    """Contrast-inverted boxes across and on the carbon, as users' junk classes hold.

    Half of them have their centre within half a box of the carbon edge (a strip of carbon at
    least 2 px wide inside the box), half lie wholly on the carbon.
    """
    boxes = []
    ny, nx = sim.images.shape[1:]
    for mic, image in enumerate(sim.images):
        if not sim.carbon['present'].iloc[mic]:
            continue
        for low, high in ((-box / 2 + 2, box / 2), (box / 2, np.inf)):
            found = 0
            while found < per_micrograph // 2:
                x, y = rng.integers(box // 2, nx - box // 2), rng.integers(box // 2, ny - box // 2)
                if low < sim.carbon_distance(mic, x, y) <= high:
                    boxes.append(-image[y - box // 2:y + box // 2, x - box // 2:x + box // 2])
                    found += 1
    return np.array(boxes, dtype=np.float32)


def _write_micrographs(folder, sim, prefix):
    """Write micrographs and their table; returns (table path, names)."""
    names = [f'{prefix}_{i:02d}' for i in range(len(sim.images))]
    paths = [folder / f'{name}.mrc' for name in names]
    for path, image in zip(paths, sim.images):
        write_map(path, image, sim.pixel_size)
    table = folder / f'{prefix}.csv'
    picking.write_micrograph_table(table, paths, sim.pixel_size, names)
    return table, names


def _truth(sim, names):
    truth = sim.coordinates[['micrograph', 'x', 'y']].copy()
    truth['micrograph'] = [names[m] for m in truth['micrograph']]
    return truth


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """Training particles, held-out particles and micrographs at 4 Å and at 2 Å per pixel.

    The training set is what a user would select: boxes around particles (good), and boxes
    on ice blobs, empty ice and the carbon (bad) from 24 micrographs of 512 x 512 px. The
    micrographs to pick are new ones, of 768 x 768 px with 40 particles each.
    """
    folder = tmp_path_factory.mktemp('classifier')
    maps = molecule_maps(n_states=2, box=BOX, pixel_size=PIXEL, seed=0)
    train_sim = simulate_micrographs(maps, n_micrographs=24, shape=(512, 512),
                                     particles_per_micrograph=20, particle_box=BOX,
                                     pixel_size=PIXEL, seed=3)
    train_sets = good_bad_particle_sets(train_sim, n_bad=2 * len(train_sim.coordinates), seed=4)
    carbon = _carbon_boxes(train_sim, 30, BOX, np.random.default_rng(5))
    test_sim = simulate_micrographs(maps, n_micrographs=3, shape=(768, 768),
                                    particles_per_micrograph=40, particle_box=BOX,
                                    pixel_size=PIXEL, seed=103)
    held_sets = good_bad_particle_sets(test_sim, seed=6)
    fine_maps = molecule_maps(n_states=2, box=2 * BOX, pixel_size=PIXEL / 2, seed=0)
    fine_sim = simulate_micrographs(fine_maps, n_micrographs=2, shape=(1024, 1024),
                                    particles_per_micrograph=30, particle_box=2 * BOX,
                                    pixel_size=PIXEL / 2, seed=7)
    mics, names = _write_micrographs(folder, test_sim, 'mic')
    fine_mics, fine_names = _write_micrographs(folder, fine_sim, 'fine')
    crop = folder / 'crop.mrc'
    write_map(crop, test_sim.images[0, :288, :320], PIXEL)
    crop_table = folder / 'crop.csv'
    picking.write_micrograph_table(crop_table, [crop], PIXEL, ['crop'])
    return {
        'folder': folder,
        'train': _write_particles(folder, train_sets, 'train', carbon),
        'held': _write_particles(folder, held_sets, 'held'),
        'held_labels': np.r_[np.ones(len(held_sets.good.images)),
                             np.zeros(len(held_sets.bad.images))],
        'mixed_sets': (good_bad_particle_sets(fine_sim, seed=8), held_sets),
        'micrographs': mics, 'truth': _truth(test_sim, names),
        'fine_micrographs': fine_mics, 'fine_truth': _truth(fine_sim, fine_names),
        'crop': crop_table,
    }


@pytest.fixture(scope='module')
def model(data):
    """The main model, trained once: box 32 at 4 Å, normalised, augmented.

    The validation set (~300 particles) is nearly all right after a few epochs, so its loss
    no longer ranks the epochs: training runs all 20 epochs and keeps the last.
    """
    out = data['folder'] / 'model'
    result = run_backend('train', '--particles', data['train'], '--out-dir', out, '--box', BOX,
                         '--normalize', '--augment', '--epochs', 20, '--patience', 0,
                         '--keep', 'last', '--batch-size', 32, '--seed', 3)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout


# ------------------------------------------------------------------------ numpy helpers

def test_fourier_resample_keeps_band_limited_images():
    y, x = np.mgrid[0:64, 0:64]
    wave = np.cos(2 * np.pi * (3 * x + 5 * y) / 64) + 0.5
    down = imaging.fourier_resample(wave[None], (32, 32))[0]
    yy, xx = np.mgrid[0:32, 0:32] * 2
    np.testing.assert_allclose(down, np.cos(2 * np.pi * (3 * xx + 5 * yy) / 64) + 0.5, atol=1e-5)
    np.testing.assert_allclose(imaging.fourier_resample(down[None], (64, 64))[0], wave, atol=1e-5)
    rect = imaging.fourier_resample(np.ones((40, 60)), (10, 15))
    assert rect.shape == (10, 15) and np.allclose(rect, 1.0)


def test_working_grid_keeps_the_centre():
    images = np.zeros((2, 100, 100), np.float32)
    images[:, 50, 50] = 1.0
    out = imaging.to_working_grid(images, 1.0, 2.0, 64)        # 100 px -> 50 px -> padded 64
    assert out.shape == (2, 64, 64)
    assert np.unravel_index(np.argmax(out[0]), out[0].shape) == (32, 32)
    out = imaging.to_working_grid(images, 1.0, 1.0, 64)        # cropped about pixel 50
    assert out[0, 32, 32] == 1.0 and out.sum() == 2.0


def test_normalize_modes():
    rng = np.random.default_rng(0)
    images = rng.normal(3.0, 5.0, (4, 16, 16)).astype(np.float32)
    boxed = imaging.normalize(images, 'box')
    np.testing.assert_allclose(boxed.mean(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(boxed.std(axis=(1, 2)), 1, atol=1e-4)
    circled = imaging.normalize(images, 'circle')
    inside = circled[:, imaging.circle_mask(16)]
    np.testing.assert_allclose(inside.std(axis=1), 1, atol=1e-4)
    np.testing.assert_array_equal(imaging.normalize(images, 'none'), images)
    assert np.all(imaging.normalize(np.ones((1, 8, 8)), 'box') == 0)


def test_augmentation_keeps_the_centre_pixel():
    images = np.zeros((64, 8, 8), np.float32)
    images[:, 4, 4], images[:, 4, 6] = 1.0, 2.0
    out = imaging.augment_dihedral(images, np.random.default_rng(0))
    assert np.all(out[:, 4, 4] == 1.0)
    seen = {tuple(np.argwhere(o == 2.0)[0]) for o in out}
    assert seen == {(4, 6), (4, 2), (6, 4), (2, 4)}
    shifted = imaging.random_shifts(images, np.random.default_rng(0), 2)
    assert np.all(shifted.sum(axis=(1, 2)) == 3.0)


def test_sliding_windows_and_peaks():
    image = np.arange(20 * 30, dtype=np.float32).reshape(20, 30)
    view = imaging.sliding_windows(image, 8, 4)
    assert view.shape == (4, 6, 8, 8) == imaging.window_grid(image.shape, 8, 4) + (8, 8)
    np.testing.assert_array_equal(view[1, 2], image[4:12, 8:16])

    scores = np.zeros((6, 6))
    scores[1, 1], scores[1, 2], scores[4, 4], scores[1, 4] = 0.9, 0.8, 0.7, 0.85
    iy, ix = imaging.suppress_non_maxima(scores, spacing=4.0, min_distance=10.0)
    # (1, 2) is not a peak; (1, 4) lies 12 px from (1, 1) and is kept; zeros are plateaus
    # suppressed by the kept points only where they are near them.
    assert list(zip(iy[:3], ix[:3])) == [(1, 1), (1, 4), (4, 4)]
    iy, ix = imaging.suppress_non_maxima(scores, spacing=4.0, min_distance=13.0)
    assert (1, 4) not in list(zip(iy, ix))


def test_split_is_stratified_and_seeded():
    labels = np.r_[np.ones(100, int), np.zeros(40, int)]
    part = imaging.stratified_split(labels, (0.7, 0.15, 0.15), seed=2)
    assert [np.sum((part == p) & (labels == 1)) for p in range(3)] == [70, 15, 15]
    assert [np.sum((part == p) & (labels == 0)) for p in range(3)] == [28, 6, 6]
    np.testing.assert_array_equal(part, imaging.stratified_split(labels, (0.7, 0.15, 0.15), 2))
    assert not np.array_equal(part, imaging.stratified_split(labels, (0.7, 0.15, 0.15), 3))
    with pytest.raises(ValueError, match='at least 3'):
        imaging.stratified_split(np.r_[labels, 2, 2], (0.7, 0.15, 0.15), 0)


def test_binary_report_agrees_with_core():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200) * 0.7 + 0.3 * labels, 2)
    report = imaging.binary_report(labels, scores, 0.5)
    assert report['roc_auc'] == pytest.approx(picking.roc_auc(labels, scores))
    assert report['confusion_matrix'] == picking.confusion_matrix(labels, scores, 0.5).tolist()
    tn, fp, fn, tp = (report['confusion'][k] for k in ('tn', 'fp', 'fn', 'tp'))
    assert report['precision'] == pytest.approx(tp / (tp + fp))
    assert report['recall'] == pytest.approx(tp / (tp + fn))


# ---------------------------------------------------------------------- backend programs

@needs_tf
def test_selfcheck():
    result = run_backend('selfcheck')
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info['tensorflow'] == '2.21.0' and info['mrcfile'] == '1.5.4'
    assert 'CPU:0' in info['devices'] and info['gpu'] is False   # CUDA_VISIBLE_DEVICES=''


@needs_tf
def test_training_outputs(model):
    out, log = model
    info = picking.read_model_info(out / picking.MODEL_FILE)
    assert (info['box'], info['pixel_size'], info['binning']) == (BOX, PIXEL, 1.0)
    assert info['normalize'] == 'box' and info['class_names'] == ['bad', 'good']
    assert info['versions']['tensorflow'] == '2.21.0'
    history = picking.read_history(out)
    assert list(history.columns) == ['epoch', 'loss', 'acc', 'val_loss', 'val_acc', 'seconds']
    assert history['epoch'].tolist() == list(range(1, info['training']['epochs_run'] + 1))
    assert history['loss'].iloc[-1] < history['loss'].iloc[0]
    logged = re.search(r'^epoch 1/20  loss (\S+)  acc (\S+)  val_loss (\S+)', log, re.M)
    np.testing.assert_allclose([float(v) for v in logged.groups()],
                               history.loc[0, ['loss', 'acc', 'val_loss']].to_numpy(float),
                               atol=1e-4)

    split = pd.read_csv(out / picking.SPLIT)
    labels = split['label'].to_numpy()
    for part, fraction in (('train', 0.7), ('val', 0.15), ('test', 0.15)):
        for label in (0, 1):
            n = np.sum((split['part'] == part) & (labels == label))
            assert abs(n - fraction * np.sum(labels == label)) <= 1
    scores = picking.read_test_scores(out)
    assert scores['row'].tolist() == split.index[split['part'] == 'test'].tolist()
    report = picking.read_test_report(out)
    assert report['n'] == {'bad': int((scores['label'] == 0).sum()),
                           'good': int((scores['label'] == 1).sum())}
    assert report['roc_auc'] == pytest.approx(picking.roc_auc(scores['label'], scores['score']))
    assert report['roc_auc'] >= 0.95 and report['accuracy'] >= 0.9
    assert report['best_epoch'] == history.loc[history['val_loss'].idxmin(), 'epoch']
    assert report['kept_epoch'] == 20 == len(history)
    assert 'keeping the weights of epoch 20 (last)' in log


@needs_tf
def test_classify_held_out_particles(model, data):
    # Particles boxed from micrographs the model never saw, good and bad interleaved.
    table = pd.read_csv(data['held'])
    order = np.random.default_rng(0).permutation(len(table))
    shuffled = data['folder'] / 'held_shuffled.csv'
    table.iloc[order].drop(columns='label').to_csv(shuffled, index=False)
    scores_path = data['folder'] / 'held_scores.csv'
    result = run_backend('predict', '--model', model[0] / picking.MODEL_FILE, '--particles',
                         shuffled, '--out', scores_path)
    assert result.returncode == 0, result.stderr[-2000:]
    scores = picking.read_scores(scores_path, len(table))
    labels = data['held_labels'][order]
    auc = picking.roc_auc(labels, scores)
    assert auc >= 0.95, f'held-out ROC AUC {auc:.4f}'
    assert 'used as they are' in result.stdout


def _pick(model, micrographs, out, *extra):
    result = run_backend('pick', '--model', model[0] / picking.MODEL_FILE, '--micrographs',
                         micrographs, '--out-dir', out, '--invert-contrast', *extra)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


@needs_tf
def test_pick_recall_and_precision(model, data):
    out = data['folder'] / 'picks'
    result = _pick(model, data['micrographs'], out, '--save-score-maps', '--keep-rejected')
    picks = picking.read_picks(out)
    score = picking.evaluate_picks(picks, data['truth'], radius=BOX / 2)
    assert score['recall'] >= 0.9 and score['precision'] >= 0.9, score
    assert picks['score'].min() >= 0.5
    rejected = picking.read_picks(out / picking.REJECTED)
    assert len(rejected) and rejected['score'].max() < 0.5

    summary = picking.read_pick_summary(out)
    assert (summary['stride'], summary['min_distance'], summary['threshold']) == (8, 16.0, 0.5)
    for entry in summary['micrographs']:
        name = entry['name']
        mine = picks[picks['micrograph'] == name]
        x, y, fom = picking.read_coordinates_star(picking.coordinates_star_path(out, name))
        np.testing.assert_allclose(x, mine['x'])
        np.testing.assert_allclose(y, mine['y'])
        np.testing.assert_allclose(fom, mine['score'], atol=1e-6)
        assert entry['n_picks'] == len(mine) and entry['grid_shape'] == [93, 93]
        scores, ys, xs = picking.read_score_map(out, name)
        assert scores.shape == (93, 93) and (ys[0], xs[-1]) == (16.0, 752.0)
        # Every pick sits on a window of the score map, with that window's score.
        iy = np.searchsorted(ys, mine['y'])
        ix = np.searchsorted(xs, mine['x'])
        np.testing.assert_allclose(scores[iy, ix], mine['score'], atol=1e-5)
    assert 'at the model\'s pixel size' in result.stdout
    star = Path(picking.coordinates_star_path(out, 'mic_00')).read_text().splitlines()
    assert star[1:9] == ['# version 30001', '', 'data_', '', 'loop_', '_rlnCoordinateX #1',
                         '_rlnCoordinateY #2', '_rlnAutopickFigureOfMerit #3']


@needs_tf
def test_window_scan_gives_the_same_scores(model, data):
    # Stride 4 needs four shifted fully convolutional passes; the window-by-window scan cuts
    # every window out and normalises it as the training particles were.
    runs = {}
    for scan in ('fcn', 'windows'):
        out = data['folder'] / f'scan_{scan}'
        _pick(model, data['crop'], out, '--save-score-maps', '--scan', scan, '--stride', 4)
        runs[scan] = (picking.read_picks(out), picking.read_score_map(out, 'crop')[0])
    assert runs['fcn'][1].shape == (65, 73)
    np.testing.assert_allclose(runs['fcn'][1], runs['windows'][1], atol=1e-4)
    pd.testing.assert_frame_equal(runs['fcn'][0][['x', 'y']], runs['windows'][0][['x', 'y']])
    assert len(runs['fcn'][0]) >= 5


@needs_tf
def test_pick_micrographs_of_another_pixel_size(model, data):
    # 2 Å micrographs are resampled to the model's 4 Å; picks come back in 2 Å pixels, on
    # the particles. The simulator draws ice edges and carbon texture in pixels, so these
    # micrographs differ from the training ones by more than the pixel size: the precision
    # bound is looser here than in the 4 Å test, which holds the targets.
    out = data['folder'] / 'picks_fine'
    result = _pick(model, data['fine_micrographs'], out)
    assert "resampled to the model's 4 Å/px: 512x512 px" in result.stdout
    picks = picking.read_picks(out)
    truth = data['fine_truth']
    score = picking.evaluate_picks(picks, truth, radius=BOX)   # half of the 64 px box
    assert score['recall'] >= 0.9 and score['precision'] >= 0.85, score
    distances = []
    for name in truth['micrograph'].unique():
        p = picks.loc[picks['micrograph'] == name, ['x', 'y']].to_numpy()
        t = truth.loc[truth['micrograph'] == name, ['x', 'y']].to_numpy(dtype=float)
        i, j = picking.match_picks(p, t, BOX)
        distances += list(np.hypot(*(p[i] - t[j]).T))
    assert np.median(distances) <= 8.0                     # 2 Å pixels: 4 px at 4 Å
    assert picks['x'].max() > 600 and picks['y'].max() > 600


@needs_tf
def test_training_resamples_sets_of_another_box_and_pixel_size(data):
    fine, coarse = data['mixed_sets']           # good: 64 px at 2 Å; bad: 32 px at 4 Å
    folder = data['folder'] / 'mixed'
    folder.mkdir()
    write_stack(folder / 'good.mrcs', fine.good.images, fine.good.pixel_size)
    write_stack(folder / 'bad.mrcs', coarse.bad.images, coarse.bad.pixel_size)
    n_good, n_bad = len(fine.good.images), len(coarse.bad.images)
    table = folder / 'particles.csv'
    pd.DataFrame({'stack': [folder / 'good.mrcs'] * n_good + [folder / 'bad.mrcs'] * n_bad,
                  'index': np.r_[np.arange(1, n_good + 1), np.arange(1, n_bad + 1)],
                  'label': [1] * n_good + [0] * n_bad,
                  'pixel_size': [2.0] * n_good + [4.0] * n_bad}).to_csv(table, index=False)
    result = run_backend('train', '--particles', table, '--out-dir', folder / 'model', '--box', 32,
                         '--normalize', 'circle', '--epochs', 1)
    assert result.returncode == 0, result.stderr[-2000:]
    assert ('working grid: 32 px at 4 Å/px (good particles 64 px at 2 Å/px, binning 2)'
            in result.stdout)
    assert f'good: {n_good} particle(s) of 64 px at 2 Å/px resampled to 32 px' in result.stdout
    assert f'bad: {n_bad} particle(s) of 32 px at 4 Å/px, used as they are' in result.stdout
    info = picking.read_model_info(folder / 'model')
    assert (info['pixel_size'], info['binning'], info['normalize']) == (4.0, 2.0, 'circle')
    assert info['input'] == {'bad': [{'box': 32, 'pixel_size': 4.0, 'count': n_bad}],
                             'good': [{'box': 64, 'pixel_size': 2.0, 'count': n_good}]}


@needs_tf
def test_bad_input_gives_one_clear_line(model, data, tmp_path):
    table = pd.read_csv(data['train'])
    cases = {}
    one_class = tmp_path / 'one_class.csv'
    table[table['label'] == 1].to_csv(one_class, index=False)
    cases['no bad particles (label 0)'] = ('train', '--particles', one_class)
    empty = tmp_path / 'empty.csv'
    table.iloc[:0].to_csv(empty, index=False)
    cases['no particles (the set is empty)'] = ('train', '--particles', empty)
    broken = tmp_path / 'broken.mrcs'
    broken.write_text('not an MRC file')
    unreadable = tmp_path / 'unreadable.csv'
    table.assign(stack=str(broken)).to_csv(unreadable, index=False)
    cases[f'{broken}: not a readable MRC file'] = ('train', '--particles', unreadable)
    missing = tmp_path / 'missing.csv'
    table.assign(stack=str(tmp_path / 'gone.mrcs')).to_csv(missing, index=False)
    cases[f'{tmp_path / "gone.mrcs"}: no such file'] = ('train', '--particles', missing)
    beyond = tmp_path / 'beyond.csv'
    table.assign(index=table['index'] + 10000).to_csv(beyond, index=False)
    cases[f'index {table["index"].max() + 10000} asked for'] = ('train', '--particles', beyond)
    cases['--fractions must be three positive numbers'] = (
        'train', '--particles', data['train'], '--fractions', '0.5,0.5')
    cases['--box must be even and at least 24 (got 31)'] = (
        'train', '--particles', data['train'], '--box', '31')
    for expected, args in cases.items():
        result = run_backend(*args, '--out-dir', tmp_path / 'model')
        assert result.returncode == 2, (expected, result.stderr)
        assert expected in error_line(result) and error_line(result).startswith('error: ')
    assert not (tmp_path / 'model').exists()

    small = tmp_path / 'small.mrc'
    write_map(small, np.zeros((20, 100), np.float32), 4.0)
    mics = tmp_path / 'small.csv'
    picking.write_micrograph_table(mics, [small], 4.0, ['tiny_one'])
    result = run_backend('pick', '--model', model[0] / picking.MODEL_FILE, '--micrographs', mics,
                         '--out-dir', tmp_path / 'picks')
    assert result.returncode == 2
    assert ("micrograph tiny_one" in error_line(result) and
            "smaller than the model's box of 32 px" in error_line(result))
