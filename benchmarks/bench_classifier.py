"""Speed of the particle classifier backend: picking a large micrograph, and training.

Run with Scipion's Python; the backend runs in the classifier environment::

    .venv/bin/python benchmarks/bench_classifier.py [--classifier-python PATH] [--keep DIR]

1. Picking: a 4096 x 4096 micrograph at 1 Å/px, model box 64 px at 4 Å/px (bin 4, so the
   micrograph is scanned at 1024 x 1024), stride 8 px. Times the backend's ``pick`` with its
   fully convolutional scan and with its in-memory window-by-window scan, and, in the same
   run, the old way: cut every window out, write them to an MRC stack, read it back, predict
   in batches of 32. The scan time is the backend's own per-micrograph time (read, bin,
   normalise, score, suppress, write), the least of several repeats (the machine is shared);
   process times include starting TensorFlow.
2. Training: 10,000 particles of 64 px, 10 epochs (no early stopping), batch 64.

Targets (2-core CPU): scan under 3 s and at least 10x faster than the old way; training
under 5 minutes. Timings do not depend on what the model has learnt, so the picking model is
trained for one epoch on noise.

The old way is measured by this same file run in the classifier environment with the hidden
``_old-way`` subcommand (it imports the backend's modules, not Scipion's).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BACKEND = HERE.parent / 'scipion_reciprocal' / 'backends' / 'classifier'
PROGRAM = BACKEND / 'particle_classifier.py'


# ------------------------------------------------------------ old way (classifier environment)

def old_way(args):
    """Cut windows, write them as an MRC stack, read it back, predict in batches of 32."""
    sys.path.insert(0, str(BACKEND))
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    import mrcfile
    import particle_classifier as pc

    model_file, info = pc.read_model_info(args.model)
    scorer = pc.load_scorer(model_file, info, args.threads)
    scorer.model.predict_on_batch(np.zeros((32, info['box'], info['box'], 1), np.float32))
    runs = [old_way_once(args, pc, mrcfile, info, scorer) for _ in range(args.repeats)]
    best = min(runs, key=lambda r: r['seconds'])
    print(json.dumps(dict(best, repeats=[r['seconds'] for r in runs])))


def old_way_once(args, pc, mrcfile, info, scorer):
    """One old-way pass over the micrograph; returns its timings."""
    box, stride = info['box'], args.stride
    start = time.perf_counter()
    image = pc.prepare_micrograph(args.micrograph, args.pixel_size, info['pixel_size'], False)
    ny, nx = ((image.shape[0] - box) // stride + 1, (image.shape[1] - box) // stride + 1)
    windows = np.empty((ny * nx, box, box), np.float32)
    for i in range(ny):
        for j in range(nx):
            windows[i * nx + j] = image[i * stride:i * stride + box, j * stride:j * stride + box]
    stack = Path(args.workdir) / 'grid_windows.mrcs'
    with mrcfile.new(stack, overwrite=True) as handle:
        handle.set_data(windows)
    cut = time.perf_counter()
    images = pc.imaging.normalize(mrcfile.read(stack), info['normalize'])[..., None]
    read = time.perf_counter()
    scores = np.concatenate([np.asarray(scorer.model.predict_on_batch(images[k:k + 32]))[:, 0]
                             for k in range(0, len(images), 32)])
    done = time.perf_counter()
    return {'windows': int(len(scores)), 'seconds': done - start, 'cut_and_write': cut - start,
            'read_back': read - cut, 'predict': done - read,
            'stack_mb': stack.stat().st_size / 2 ** 20}


# ------------------------------------------------------------- benchmark (Scipion environment)

def classifier_python(explicit):
    """The classifier environment's python (argument, variable or the checkout's default)."""
    candidates = [explicit, os.environ.get('SCIPION_RECIPROCAL_CLASSIFIER_PYTHON')]
    if os.environ.get('SCIPION_SOFTWARE'):
        candidates.append(Path(os.environ['SCIPION_SOFTWARE'])
                          / 'em/classifier-2.21.0/env/bin/python')
    candidates.append(HERE.parent / '.scipion-home/software/em/classifier-2.21.0/env/bin/python')
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return str(candidate)
    sys.exit('no classifier environment: pass --classifier-python or install it with '
             '`scipion-reciprocal install-backend classifier`')


def run(python, *args, threads=2):
    """Run a program in the classifier environment; returns (stdout, seconds)."""
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME')}
    env['CUDA_VISIBLE_DEVICES'] = ''
    start = time.perf_counter()
    result = subprocess.run([python, *[str(a) for a in args], '--threads', str(threads)],
                            capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if result.returncode:
        sys.exit(f'failed: {" ".join(str(a) for a in args)}\n{result.stderr[-3000:]}')
    return result.stdout, seconds


def write_particles(folder, n, box, pixel_size, seed):
    """Noise particles, half with a centred Gaussian blob (label 1); returns the table path."""
    sys.path.insert(0, str(HERE.parent))
    from scipion_reciprocal.core.picking import write_particle_table
    from scipion_reciprocal.formats.mrc import write_stack

    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 2).astype(int)
    axis = np.arange(box) - box // 2
    blob = np.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / (2 * (box / 10) ** 2))
    images = rng.normal(size=(n, box, box)).astype(np.float32)
    images += (labels[:, None, None] * blob).astype(np.float32)
    stack = folder / f'particles_{n}.mrcs'
    write_stack(stack, images, pixel_size)
    table = folder / f'particles_{n}.csv'
    write_particle_table(table, [stack] * n, np.arange(1, n + 1), pixel_size, labels)
    return table


def bench_picking(python, folder, threads):
    """Picking figures: fully convolutional, window by window, and the old way."""
    sys.path.insert(0, str(HERE.parent))
    from scipion_reciprocal.core.picking import read_pick_summary, write_micrograph_table
    from scipion_reciprocal.formats.mrc import write_map

    table = write_particles(folder, 256, 64, 4.0, seed=1)
    model = folder / 'pick_model'
    run(python, PROGRAM, 'train', '--particles', table, '--out-dir', model, '--box', 64,
        '--normalize', '--epochs', 1, threads=threads)
    micrograph = folder / 'micrograph_4096.mrc'
    rng = np.random.default_rng(2)
    write_map(micrograph, rng.normal(size=(4096, 4096)).astype(np.float32), 1.0)
    figures = {}
    for scan, repeats in (('fcn', 3), ('windows', 2)):
        mics = folder / f'micrographs_{scan}.csv'
        write_micrograph_table(mics, [micrograph] * repeats, 1.0,
                               [f'mic4096_{n}' for n in range(repeats)])
        out = folder / f'picks_{scan}'
        _, process = run(python, PROGRAM, 'pick', '--model', model / 'model.keras',
                         '--micrographs', mics, '--out-dir', out, '--stride', 8, '--scan', scan,
                         threads=threads)
        entries = read_pick_summary(out)['micrographs']
        figures[scan] = {'seconds': min(e['seconds'] for e in entries),
                         'repeats': [e['seconds'] for e in entries], 'process_s': process,
                         'windows': int(np.prod(entries[0]['grid_shape'])),
                         'binned': entries[0]['binned_shape']}
    stdout, process = run(python, __file__, '_old-way', '--model', model / 'model.keras',
                          '--micrograph', micrograph, '--pixel-size', 1.0, '--stride', 8,
                          '--workdir', folder, '--repeats', 2, threads=threads)
    figures['old'] = dict(json.loads(stdout.strip().splitlines()[-1]), process_s=process)
    return figures


def bench_training(python, folder, threads):
    """Training figures: seconds per epoch and in all, for 10,000 particles of 64 px."""
    table = write_particles(folder, 10000, 64, 4.0, seed=3)
    out = folder / 'train_model'
    stdout, process = run(python, PROGRAM, 'train', '--particles', table, '--out-dir', out,
                          '--box', 64, '--normalize', '--augment', '--balance', '--epochs', 10,
                          '--patience', 0, '--batch-size', 64, threads=threads)
    epochs = [float(line.split(',')[-1]) for line in
              (out / 'history.csv').read_text().splitlines()[1:]]
    load = next(line for line in stdout.splitlines() if line.startswith('read '))
    return {'epochs_s': epochs, 'train_s': sum(epochs), 'process_s': process, 'load': load,
            'n_train': json.loads((out / 'model.json').read_text())['training']['counts']['train']}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = parser.add_subparsers(dest='mode')
    old = sub.add_parser('_old-way')
    for name in ('--model', '--micrograph', '--workdir'):
        old.add_argument(name, required=True)
    old.add_argument('--pixel-size', type=float, required=True)
    old.add_argument('--stride', type=int, required=True)
    old.add_argument('--repeats', type=int, default=1)
    old.add_argument('--threads', type=int, default=2)
    parser.add_argument('--classifier-python', default=None)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--keep', default=None, help='keep the data in this folder')
    parser.add_argument('--skip-training', action='store_true')
    args = parser.parse_args()
    if args.mode == '_old-way':
        old_way(args)
        return
    python = classifier_python(args.classifier_python)
    folder = Path(args.keep or tempfile.mkdtemp(prefix='bench-classifier-'))
    folder.mkdir(parents=True, exist_ok=True)
    print(f'classifier environment: {python}; {args.threads} TensorFlow threads; data in {folder}')

    pick = bench_picking(python, folder, args.threads)
    fcn, windows, old = pick['fcn'], pick['windows'], pick['old']
    print(f'\n1. picking a 4096x4096 micrograph at bin 4 ({fcn["binned"][1]}x{fcn["binned"][0]}), '
          f'box 64, stride 8: {fcn["windows"]} windows')
    for name, entry in (('fully convolutional scan', fcn), ('in-memory window scan', windows),
                        ('old way', old)):
        print(f'   {name + ":":26s} {entry["seconds"]:6.2f} s  (repeats '
              + ', '.join(f'{s:.2f}' for s in entry['repeats'])
              + f' s; process {entry["process_s"]:.1f} s)')
    print(f'   old way = cut + write {old["cut_and_write"]:.2f} s ({old["stack_mb"]:.0f} MB stack) '
          f'+ read and normalise {old["read_back"]:.2f} s + predict {old["predict"]:.2f} s')
    ratio = old['seconds'] / fcn['seconds']
    print(f'   ratio old / fully convolutional: {ratio:.1f}x;  old / in-memory windows: '
          f'{old["seconds"] / windows["seconds"]:.1f}x;  in-memory windows / fully '
          f'convolutional: {windows["seconds"] / fcn["seconds"]:.1f}x')
    print(f'   targets: scan < 3 s -> {"met" if fcn["seconds"] < 3 else "NOT met"}; ratio >= 10x '
          f'-> {"met" if ratio >= 10 else "NOT met"}')
    if not args.skip_training:
        train = bench_training(python, folder, args.threads)
        print(f'\n2. training 10,000 particles of 64 px, 10 epochs ({train["n_train"]["good"]} + '
              f'{train["n_train"]["bad"]} training images per epoch); {train["load"]}')
        print('   seconds per epoch: ' + ' '.join(f'{s:.1f}' for s in train['epochs_s']))
        print(f'   training {train["train_s"]:.1f} s ({train["train_s"] / 60:.2f} min), process '
              f'{train["process_s"]:.1f} s; target < 5 min -> '
              f'{"met" if train["process_s"] < 300 else "NOT met"}')


if __name__ == '__main__':
    main()
