"""Good/bad particle classifier: train a CNN, score particles, pick micrographs.

Runs inside the classifier's own environment (TensorFlow, numpy, mrcfile) from its file path::

    python particle_classifier.py train --particles particles.csv --out-dir model/ --box 64
    python particle_classifier.py predict --model model/model.keras --particles p.csv --out s.csv
    python particle_classifier.py pick --model model/model.keras --micrographs m.csv --out-dir p/
    python particle_classifier.py selfcheck

Inputs and outputs are files; the layouts are described in ``--help`` of each subcommand and in
the module constants below. Bad input ends the program with status 2 and one line on stderr.
"""

import argparse
import json
import os
import platform
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import mrcfile  # noqa: E402
import numpy as np  # noqa: E402

import classifier_io as cio  # noqa: E402
import imaging  # noqa: E402
from classifier_files import (COORDINATES, HISTORY, MODEL_FILE, MODEL_INFO,  # noqa: E402
                              PICK_COLUMNS, PICK_SUMMARY, PICKS, REJECTED, SCORE_MAPS, SPLIT,
                              STAR_SUFFIX, TEST_REPORT, TEST_SCORES)

CLASS_NAMES = ['bad', 'good']
PARTS = ('train', 'val', 'test')
FORMAT = 'scipion-reciprocal particle classifier 1'


def log(message):
    """One line to stdout, flushed (the protocol's log follows it)."""
    print(message, flush=True)


def start_tensorflow(threads):
    """Import the TensorFlow part with ``threads`` CPU threads (0: TensorFlow's choice)."""
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    import cnn
    return cnn


# ----------------------------------------------------------------------------------- train

def working_grid(source, good_rows, box, binning):
    """Working pixel size and binning from the good particles' most common box and pixel size.

    Returns
    -------
    tuple
        ``(pixel_size, binning, reference_box, reference_pixel_size)``: the working pixel size is
        the good set's pixel size times ``binning``; ``binning`` defaults to the good set's box
        divided by the working box, so the working box shows the same field as the good boxes.
    """
    ref_box, ref_pixel, _ = max(source.groups(good_rows), key=lambda g: g[2])
    if binning is None:
        binning = ref_box / box
    if binning <= 0:
        raise cio.BackendError(f'--binning must be positive, got {binning}')
    return ref_pixel * binning, binning, ref_box, ref_pixel


def describe_resampling(name, source, rows=None):
    """Log how each (box, pixel size) group of particles reaches the working grid."""
    for size, pixel, count in source.groups(rows):
        new = imaging.resampled_size(size, pixel, source.pixel_size)
        if new == size and size == source.box and abs(pixel - source.pixel_size) < 1e-6:
            log(f'{name}: {count} particle(s) of {size} px at {pixel:g} Å/px, used as they are')
            continue
        fit = ('' if new == source.box else
               f', {"cropped" if new > source.box else "padded"} to {source.box} px')
        log(f'{name}: {count} particle(s) of {size} px at {pixel:g} Å/px resampled to {new} px '
            f'at {source.pixel_size:g} Å/px{fit}')


def check_train_options(args):
    """Refuse impossible training options before any data are read."""
    problems = []
    if args.box < imaging.MIN_BOX or args.box % 2:
        problems.append(f'--box must be even and at least {imaging.MIN_BOX} (got {args.box})')
    for name in ('epochs', 'batch_size'):
        if getattr(args, name) < 1:
            problems.append(f'--{name.replace("_", "-")} must be at least 1')
    if args.patience < 0 or (args.max_shift is not None and args.max_shift < 0):
        problems.append('--patience and --max-shift cannot be negative')
    if args.learning_rate <= 0 or args.cache_gb < 0:
        problems.append('--learning-rate must be positive and --cache-gb not negative')
    if problems:
        raise cio.BackendError('; '.join(problems))
    return parse_fractions(args.fractions)


def train(args):
    """The ``train`` subcommand."""
    fractions = check_train_options(args)
    table = cio.read_particles(args.particles, labelled=True)
    labels = table['label']
    by_class = {name: np.flatnonzero(labels == v) for v, name in enumerate(CLASS_NAMES)}
    source = cio.ParticleImages(table, args.box, args.normalize)
    pixel_size, binning, ref_box, ref_pixel = working_grid(source, by_class['good'], args.box,
                                                           args.binning)
    source.pixel_size = pixel_size
    log(f'working grid: {args.box} px at {pixel_size:g} Å/px (good particles {ref_box} px at '
        f'{ref_pixel:g} Å/px, binning {binning:g}); normalisation {args.normalize}')
    for name in CLASS_NAMES[::-1]:
        describe_resampling(name, source, by_class[name])
    try:
        part = imaging.stratified_split(labels, fractions, args.seed)
    except ValueError as exc:
        raise cio.BackendError(f'{args.particles}: {exc}') from exc
    rows = {name: np.flatnonzero(part == p) for p, name in enumerate(PARTS)}
    counts = {name: {c: int(np.sum(labels[r] == v)) for v, c in enumerate(CLASS_NAMES)}
              for name, r in rows.items()}
    log(f'split (seed {args.seed}): ' + ', '.join(
        f'{name} {c["good"]} good + {c["bad"]} bad' for name, c in counts.items()))
    class_weight = None
    if args.balance:
        n_train = len(rows['train'])
        class_weight = {v: n_train / (2.0 * counts['train'][c]) for v, c in enumerate(CLASS_NAMES)}
        log('class weights: ' + ', '.join(f'{c} {class_weight[v]:.3f}'
                                          for v, c in enumerate(CLASS_NAMES)))
    if len(source) * args.box ** 2 * 4 <= args.cache_gb * 2 ** 30:
        start = time.perf_counter()
        source.preload()
        log(f'read {len(source)} particles into memory in {time.perf_counter() - start:.1f} s')
    else:
        log(f'{len(source)} particles exceed --cache-gb {args.cache_gb:g}: read from the stacks '
            f'batch by batch')

    cnn = start_tensorflow(args.threads)
    model, epoch_log, max_shift = fit(cnn, args, source, labels, rows, class_weight)
    scorer = cnn.Scorer(model, args.normalize)
    scores = imaging.sigmoid(scorer.logits(source.load(rows['test']), args.batch_size))
    source.close()
    report = imaging.binary_report(labels[rows['test']], scores, 0.5)
    report.update(best_epoch=epoch_log.best_epoch, kept_epoch=epoch_log.kept_epoch)
    log(f'test set: accuracy {report["accuracy"]:.4f}, precision {fmt(report["precision"])}, '
        f'recall {fmt(report["recall"])}, ROC AUC {fmt(report["roc_auc"])}')

    info = {
        'format': FORMAT, 'box': args.box, 'pixel_size': pixel_size, 'binning': binning,
        'normalize': args.normalize, 'class_names': CLASS_NAMES,
        'score': 'sigmoid of the model output: probability that a particle is good',
        'window_stride_multiple': cnn.TOTAL_STRIDE, 'n_parameters': int(model.count_params()),
        'input': {name: [{'box': b, 'pixel_size': p, 'count': c}
                         for b, p, c in source.groups(by_class[name])] for name in CLASS_NAMES},
        'training': {
            'particles': os.path.abspath(args.particles), 'seed': args.seed,
            'fractions': fractions, 'counts': counts, 'augment': args.augment,
            'max_shift': max_shift if args.augment else 0, 'balance': args.balance,
            'class_weight': (None if class_weight is None else
                             {CLASS_NAMES[v]: w for v, w in class_weight.items()}),
            'epochs': args.epochs, 'epochs_run': len(epoch_log.history),
            'best_epoch': epoch_log.best_epoch, 'kept_epoch': epoch_log.kept_epoch,
            'keep': args.keep, 'patience': args.patience, 'learning_rate': args.learning_rate,
            'batch_size': args.batch_size,
            'seconds': round(sum(r['seconds'] for r in epoch_log.history), 3)},
        'versions': dict(cnn.versions(), mrcfile=mrcfile.__version__,
                         python=platform.python_version()),
    }
    write_training_outputs(args.out_dir, model, info, epoch_log.history, labels, part,
                           rows['test'], scores, report)


def fit(cnn, args, source, labels, rows, class_weight):
    """Build and train the CNN; returns the model, its epoch log and the augmentation shift."""
    import keras

    keras.utils.set_random_seed(args.seed)
    steps = args.epochs * -(-len(rows['train']) // args.batch_size)
    model = cnn.build_model(args.box, args.learning_rate, steps)
    log(f'model: {model.count_params()} parameters; TensorFlow devices {cnn.devices()}')
    max_shift = args.box // 8 if args.max_shift is None else args.max_shift
    if args.augment:
        log(f'augmentation: 90 degree rotations, flips, shifts of up to {max_shift} px')
    train_batches = cnn.ImageBatches(source, rows['train'], labels, args.batch_size,
                                     np.random.default_rng(args.seed), args.augment,
                                     class_weight, max_shift)
    val_batches = cnn.ImageBatches(source, rows['val'], labels, args.batch_size)
    epoch_log = cnn.EpochLog(args.epochs, args.patience, log, args.keep)
    model.fit(train_batches, validation_data=val_batches, epochs=args.epochs, verbose=0,
              callbacks=[epoch_log])
    total = sum(row['seconds'] for row in epoch_log.history)
    log(f'trained {len(epoch_log.history)} epoch(s) in {total:.1f} s; lowest validation loss '
        f'{epoch_log.best_loss:.4f} at epoch {epoch_log.best_epoch}')
    return model, epoch_log, max_shift


def write_training_outputs(out_dir, model, info, history, labels, part, test_rows, scores,
                           report):
    """Write the files of a trained model; ``model.json`` last, once everything else is there."""
    os.makedirs(out_dir, exist_ok=True)

    def out(name):
        return os.path.join(out_dir, name)

    cio.write_csv(out(HISTORY), ['epoch', 'loss', 'acc', 'val_loss', 'val_acc', 'seconds'],
                  [[r['epoch'], f'{r["loss"]:.6g}', f'{r["acc"]:.6g}', f'{r["val_loss"]:.6g}',
                    f'{r["val_acc"]:.6g}', f'{r["seconds"]:.3f}'] for r in history])
    cio.write_csv(out(SPLIT), ['row', 'label', 'part'],
                  [[i, int(labels[i]), PARTS[p]] for i, p in enumerate(part)])
    cio.write_csv(out(TEST_SCORES), ['row', 'label', 'score'],
                  [[int(r), int(labels[r]), f'{s:.9g}'] for r, s in zip(test_rows, scores)])
    cio.write_json(out(TEST_REPORT), report)
    tmp = out(f'.{uuid.uuid4().hex[:8]}.keras')
    try:
        model.save(tmp)
        os.replace(tmp, out(MODEL_FILE))
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    cio.write_json(out(MODEL_INFO), info)
    log(f'wrote {MODEL_FILE}, {MODEL_INFO}, {HISTORY}, {TEST_REPORT}, {TEST_SCORES}, {SPLIT} '
        f'in {out_dir}')


def parse_fractions(text):
    """``"0.7,0.15,0.15"`` -> three floats, with a clear error otherwise."""
    try:
        values = [float(v) for v in text.split(',')]
    except ValueError:
        values = []
    if len(values) != 3 or min(values) <= 0 or abs(sum(values) - 1) > 1e-6:
        raise cio.BackendError(f'--fractions must be three positive numbers summing to 1 '
                               f'(train,validation,test), got {text!r}')
    return values


def fmt(value):
    """A ratio for the log, or ``n/a``."""
    return 'n/a' if value is None else f'{value:.4f}'


# ----------------------------------------------------------------------------- load model

def read_model_info(path):
    """``(model file, model.json content)`` from ``model.keras`` or the folder holding it."""
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    model_file = os.path.join(folder, MODEL_FILE) if os.path.isdir(path) else path
    if not os.path.isfile(model_file):
        raise cio.BackendError(f'{model_file}: no such model file')
    info = cio.read_json(os.path.join(folder, MODEL_INFO))
    if info.get('format') != FORMAT:
        raise cio.BackendError(f'{os.path.join(folder, MODEL_INFO)}: not a model description '
                               f'written by this program')
    return model_file, info


def load_scorer(model_file, info, threads):
    """Start TensorFlow, load the model and wrap it in a :class:`cnn.Scorer`."""
    cnn = start_tensorflow(threads)
    try:
        model = cnn.load_model(model_file)
    except (OSError, ValueError) as exc:
        raise cio.BackendError(f'{model_file}: cannot load the model ({exc})') from exc
    log(f'model {model_file}: box {info["box"]} px at {info["pixel_size"]:g} Å/px, '
        f'normalisation {info["normalize"]}')
    return cnn.Scorer(model, info['normalize'])


# --------------------------------------------------------------------------------- predict

def predict(args):
    """The ``predict`` subcommand."""
    if args.batch_size < 1:
        raise cio.BackendError('--batch-size must be at least 1')
    model_file, info = read_model_info(args.model)
    table = cio.read_particles(args.particles, labelled=False)
    source = cio.ParticleImages(table, info['box'], info['normalize'], info['pixel_size'])
    scorer = load_scorer(model_file, info, args.threads)
    describe_resampling('particles', source)
    scores = np.empty(len(source))
    chunk = max(args.batch_size, 4096)
    start = time.perf_counter()
    for first in range(0, len(source), chunk):
        rows = np.arange(first, min(first + chunk, len(source)))
        scores[rows] = imaging.sigmoid(scorer.logits(source.load(rows), args.batch_size))
        log(f'scored {rows[-1] + 1}/{len(source)} particles')
    source.close()
    seconds = time.perf_counter() - start
    good = int(np.sum(scores >= 0.5))
    log(f'{len(scores)} particles in {seconds:.1f} s; {good} score >= 0.5')
    cio.write_csv(args.out, ['row', 'score'], [[i, f'{s:.9g}'] for i, s in enumerate(scores)])
    log(f'wrote {args.out}')


# ------------------------------------------------------------------------------------ pick

def binned_shape(shape, pixel_size, model_pixel_size):
    """Micrograph size in pixels at the model's pixel size."""
    return tuple(imaging.resampled_size(n, pixel_size, model_pixel_size) for n in shape)


def check_micrographs(table, info):
    """Open every micrograph's header; error if one is unreadable or smaller than the box.

    Returns
    -------
    list of tuple
        ``(ny, nx)`` of each micrograph in its own pixels.
    """
    shapes = []
    for path, name, pixel in zip(table['path'], table['name'], table['pixel_size']):
        with cio.open_mrc(path) as handle:
            header = handle.header
            shape = (int(header.ny), int(header.nx))
            if int(header.nz) != 1:
                raise cio.BackendError(f'micrograph {name} ({path}): holds {int(header.nz)} '
                                       f'sections, not one 2D image')
        binned = binned_shape(shape, pixel, info['pixel_size'])
        if min(binned) < info['box']:
            raise cio.BackendError(
                f'micrograph {name} ({path}): {shape[1]}x{shape[0]} px at {pixel:g} Å/px is '
                f'{binned[1]}x{binned[0]} px at the model\'s {info["pixel_size"]:g} Å/px, smaller '
                f'than the model\'s box of {info["box"]} px')
        shapes.append(shape)
    return shapes


def prepare_micrograph(path, pixel_size, model_pixel_size, invert):
    """Read a micrograph, resample it to the model's pixel size and scale it to mean 0, std 1."""
    image = cio.read_micrograph(path)
    shape = binned_shape(image.shape, pixel_size, model_pixel_size)
    if shape != image.shape:
        image = imaging.fourier_resample(image, shape)
    mean, std = float(image.mean(dtype=np.float64)), float(image.std(dtype=np.float64))
    image = (image - mean) / (std if std > 0 else 1.0)
    if invert:
        image = -image
    return image.astype(np.float32)


def pick(args):
    """The ``pick`` subcommand."""
    model_file, info = read_model_info(args.model)
    table = cio.read_micrograph_table(args.micrographs)
    box, model_pixel = info['box'], info['pixel_size']
    stride = args.stride or max(1, box // 4)
    min_distance = box / 2.0 if args.min_distance is None else args.min_distance
    if stride < 1 or not 0 <= args.threshold <= 1 or min_distance < 0 or args.max_picks < 0:
        raise cio.BackendError('--stride must be at least 1, --threshold within [0, 1], '
                               '--min-distance and --max-picks not negative')
    shapes = check_micrographs(table, info)
    scorer = load_scorer(model_file, info, args.threads)
    log(f'scanning {len(shapes)} micrograph(s): window {box} px, stride {stride} px, minimum '
        f'distance {min_distance:g} px (at {model_pixel:g} Å/px), threshold {args.threshold:g}, '
        f'{"fully convolutional" if args.scan == "fcn" else "window by window"}')
    if info['normalize'] == 'none':
        log('note: the model was trained without per-particle normalisation; micrographs are '
            'scaled to mean 0, std 1, which must match the particles\' intensity scale')
    os.makedirs(os.path.join(args.out_dir, COORDINATES), exist_ok=True)
    if args.save_score_maps:
        os.makedirs(os.path.join(args.out_dir, SCORE_MAPS), exist_ok=True)
    scan = scorer.scan if args.scan == 'fcn' else scorer.scan_windows
    start = time.perf_counter()
    scan(np.zeros((box + stride, box + stride), np.float32), stride)
    log(f'scan prepared in {time.perf_counter() - start:.1f} s')
    picks, rejected, summary = [], [], []
    for n, (path, name, pixel) in enumerate(zip(table['path'], table['name'],
                                                table['pixel_size']), start=1):
        start = time.perf_counter()
        image = prepare_micrograph(path, pixel, model_pixel, args.invert_contrast)
        original = shapes[n - 1]
        resampled = image.shape != tuple(original)
        logits = scan(image, stride)
        iy, ix = imaging.suppress_non_maxima(logits, stride, min_distance)
        scores = imaging.sigmoid(logits[iy, ix])
        scale_y, scale_x = original[0] / image.shape[0], original[1] / image.shape[1]
        x = (ix * stride + box // 2) * scale_x
        y = (iy * stride + box // 2) * scale_y
        chosen = np.flatnonzero(scores >= args.threshold)
        if args.max_picks:
            chosen = chosen[:args.max_picks]
        keep = np.zeros(len(scores), dtype=bool)
        keep[chosen] = True
        stem = cio.file_stem(name)
        picks += [[name, f'{a:.2f}', f'{b:.2f}', f'{s:.9g}']
                  for a, b, s in zip(x[keep], y[keep], scores[keep])]
        rejected += [[name, f'{a:.2f}', f'{b:.2f}', f'{s:.9g}']
                     for a, b, s in zip(x[~keep], y[~keep], scores[~keep])]
        cio.write_coordinates_star(os.path.join(args.out_dir, COORDINATES, stem + STAR_SUFFIX),
                                   x[keep], y[keep], scores[keep])
        score_map = None
        if args.save_score_maps:
            score_map = os.path.join(SCORE_MAPS, stem + '.npy')
            with cio.atomic_path(os.path.join(args.out_dir, score_map)) as tmp:
                with open(tmp, 'wb') as handle:
                    np.save(handle, imaging.sigmoid(logits).astype(np.float32))
        seconds = time.perf_counter() - start
        summary.append({'name': name, 'path': path, 'pixel_size': float(pixel),
                        'shape': list(original), 'binned_shape': list(image.shape),
                        'scale': [scale_y, scale_x], 'grid_shape': list(logits.shape),
                        'n_picks': int(keep.sum()), 'n_rejected': int((~keep).sum()),
                        'score_map': score_map, 'seconds': round(seconds, 3)})
        how = (f'resampled to the model\'s {model_pixel:g} Å/px: {image.shape[1]}x'
               f'{image.shape[0]} px' if resampled else 'at the model\'s pixel size')
        log(f'micrograph {n}/{len(shapes)} {name}: {original[1]}x{original[0]} px at {pixel:g} '
            f'Å/px, {how}; {logits.size} windows; {int(keep.sum())} picks, '
            f'{int((~keep).sum())} rejected peaks; {seconds:.2f} s')
    header = list(PICK_COLUMNS)
    cio.write_csv(os.path.join(args.out_dir, PICKS), header, picks)
    if args.keep_rejected:
        cio.write_csv(os.path.join(args.out_dir, REJECTED), header, rejected)
    cio.write_json(os.path.join(args.out_dir, PICK_SUMMARY), {
        'model': os.path.abspath(args.model), 'box': box, 'pixel_size': model_pixel,
        'stride': stride, 'min_distance': min_distance, 'threshold': args.threshold,
        'max_picks': args.max_picks, 'scan': args.scan, 'invert_contrast': args.invert_contrast,
        'window_centre': 'window (i, j) is centred on binned pixel (i * stride + box // 2, '
                         'j * stride + box // 2); original pixel = binned pixel * scale',
        'micrographs': summary})
    log(f'{len(picks)} picks on {len(shapes)} micrograph(s); wrote {PICKS} and {COORDINATES}/ '
        f'in {args.out_dir}')


# ------------------------------------------------------------------------------- selfcheck

def selfcheck(args):
    """The ``selfcheck`` subcommand: one JSON line with versions and devices."""
    cnn = start_tensorflow(args.threads)
    print(json.dumps(dict(cnn.versions(), mrcfile=mrcfile.__version__,
                          python=platform.python_version(), devices=cnn.devices(),
                          gpu=any(d.startswith('GPU') for d in cnn.devices()))), flush=True)


# -------------------------------------------------------------------------------- command line

def build_parser():
    """Argument parser of the four subcommands."""
    parser = argparse.ArgumentParser(prog='particle_classifier.py', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)

    def common(p):
        p.add_argument('--threads', type=int, default=0,
                       help='CPU threads for TensorFlow (0: its own choice)')
        return p

    t = common(sub.add_parser('train', help='train a classifier on good and bad particles'))
    t.add_argument('--particles', required=True,
                   help='CSV with columns stack,index,label,pixel_size (index 1-based, label 1 '
                        'good / 0 bad, pixel size in Å)')
    t.add_argument('--out-dir', required=True, help=f'folder for {MODEL_FILE}, {MODEL_INFO}, '
                   f'{HISTORY}, {TEST_REPORT}, {TEST_SCORES}, {SPLIT}')
    t.add_argument('--box', type=int, default=64, help='working box in pixels (even, >= 24)')
    t.add_argument('--binning', type=float, default=None,
                   help='working pixel size / good particles\' pixel size (default: good box / '
                        'working box, so the working box shows the whole good box)')
    t.add_argument('--normalize', nargs='?', const='box', default='none',
                   choices=imaging.NORMALIZE_MODES,
                   help='per-particle normalisation to mean 0, std 1 measured over the box '
                        '(--normalize or --normalize box) or the inscribed circle')
    t.add_argument('--augment', action='store_true',
                   help='random 90 degree rotations, flips and small shifts of the training '
                        'images')
    t.add_argument('--max-shift', type=int, default=None,
                   help='largest shift of the augmentation in working pixels (default box // 8, '
                        'half the default picking stride, so that picking windows off a '
                        'particle\'s centre still score as it)')
    t.add_argument('--balance', action='store_true',
                   help='weight the classes inversely to their training counts')
    t.add_argument('--fractions', default='0.7,0.15,0.15',
                   help='train,validation,test fractions (stratified, shuffled with --seed)')
    t.add_argument('--seed', type=int, default=0)
    t.add_argument('--epochs', type=int, default=20)
    t.add_argument('--patience', type=int, default=3,
                   help='stop after this many epochs without a lower validation loss (0: never)')
    t.add_argument('--keep', choices=('best', 'last'), default='best',
                   help='end with the weights of the epoch of lowest validation loss (best) or '
                        'of the last epoch run (last: for small validation sets, whose loss '
                        'stops ranking epochs once nearly every particle is right)')
    t.add_argument('--learning-rate', type=float, default=1e-3,
                   help='initial learning rate of Adam; it decays along a cosine to 5 %% of '
                        'this at the last of --epochs')
    t.add_argument('--batch-size', type=int, default=64)
    t.add_argument('--cache-gb', type=float, default=4.0,
                   help='hold the working-size images in memory when they fit in this many GiB')
    t.set_defaults(func=train)

    p = common(sub.add_parser('predict', help='score particles with a trained model'))
    p.add_argument('--model', required=True, help=f'{MODEL_FILE} (with {MODEL_INFO} beside it)')
    p.add_argument('--particles', required=True,
                   help='CSV with columns stack,index,pixel_size (others ignored)')
    p.add_argument('--out', required=True, help='CSV row,score (row: 0-based input row)')
    p.add_argument('--batch-size', type=int, default=256)
    p.set_defaults(func=predict)

    k = common(sub.add_parser('pick', help='pick particles on micrographs with a trained model'))
    k.add_argument('--model', required=True, help=f'{MODEL_FILE} (with {MODEL_INFO} beside it)')
    k.add_argument('--micrographs', required=True, help='CSV with columns path,pixel_size,name')
    k.add_argument('--out-dir', required=True)
    k.add_argument('--stride', type=int, default=0,
                   help='window step in pixels at the model\'s pixel size (default box // 4)')
    k.add_argument('--threshold', type=float, default=0.5, help='lowest score of a pick')
    k.add_argument('--min-distance', type=float, default=None,
                   help='smallest distance between picks, pixels at the model\'s pixel size '
                        '(default box / 2)')
    k.add_argument('--max-picks', type=int, default=0,
                   help='keep at most this many picks per micrograph, best first (0: all)')
    k.add_argument('--save-score-maps', action='store_true',
                   help=f'write {SCORE_MAPS}/<name>.npy (score of every window)')
    k.add_argument('--keep-rejected', action='store_true',
                   help=f'write {REJECTED}: score peaks below the threshold or over the cap')
    k.add_argument('--invert-contrast', action='store_true',
                   help='negate the micrographs (particles were extracted with inverted contrast)')
    k.add_argument('--scan', choices=('fcn', 'windows'), default='fcn',
                   help='fully convolutional pass (default) or window by window (same scores, '
                        'slower)')
    k.set_defaults(func=pick)

    s = common(sub.add_parser('selfcheck', help='print versions and devices as one JSON line'))
    s.set_defaults(func=selfcheck)
    return parser


def main(argv=None):
    """Run a subcommand; return 0, or 2 after one error line on stderr."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except cio.BackendError as exc:
        print(f'error: {exc}', file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
