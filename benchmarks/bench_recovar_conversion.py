"""Benchmark of RECOVAR input conversion (issue 5): 200,000 particles, goal under 10 s.

Builds a RELION 3.1 particle table of 200,000 particles spread over 2,000 MRC stacks of 100
images (128 px; the stacks are sparse files under ``benchmarks/output/recovar_bench``, headers
real, data never written; removed at the end), then times in this run:

(1) ``formats.cryodrgn.write_recovar_inputs``: poses.pkl, ctf.pkl, id_map.csv, the linked
    stacks (header checks + symlinks) and the RELION 3.1 particles.star;
(2) a plain per-row loop doing the same work the obvious way (iterrows, one rotation and one
    CTF row per particle, one header check and link per stack, text lines written by hand),
    on the first ``--naive`` particles, extrapolated to all of them;

and prints both, the ratio, and checks that the two give the same poses and CTF.

Usage::

    python benchmarks/bench_recovar_conversion.py [--n 200000] [--naive 20000]
"""
import argparse
import os
import pickle
import shutil
import sys
import time
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
from scipy.spatial.transform import Rotation

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from scipion_reciprocal.formats import cryodrgn  # noqa: E402
from scipion_reciprocal.formats.mrc import validate_mrc  # noqa: E402

OUTPUT = HERE / 'output'
BOX, PIXEL_SIZE, PER_STACK = 128, 1.1, 100


def sparse_stacks(folder, n_stacks):
    """``n_stacks`` MRC stacks of ``PER_STACK`` images: real headers, sparse (unwritten) data."""
    folder.mkdir(parents=True, exist_ok=True)
    size = 1024 + PER_STACK * BOX * BOX * 4
    for k in range(n_stacks):
        path = folder / f'mic_{k:05d}.mrcs'
        with mrcfile.new(path, overwrite=True) as mrc:
            mrc.set_data(np.zeros((1, BOX, BOX), np.float32))
            mrc.header.nz = mrc.header.mz = PER_STACK
            mrc.header.ispg = 0
        os.truncate(path, size)


def particle_table(n, stacks_rel):
    rng = np.random.default_rng(0)
    stack = np.arange(n) // PER_STACK
    index = np.arange(n) % PER_STACK + 1
    names = pd.Series(index).astype(str).str.zfill(6) + '@' + f'{stacks_rel}/mic_' + \
        pd.Series(stack).astype(str).str.zfill(5) + '.mrcs'
    return pd.DataFrame({
        'rlnImageName': names.to_numpy(object),
        'rlnAngleRot': rng.uniform(-180, 180, n), 'rlnAngleTilt': rng.uniform(0, 180, n),
        'rlnAnglePsi': rng.uniform(-180, 180, n),
        'rlnOriginXAngst': rng.uniform(-10, 10, n), 'rlnOriginYAngst': rng.uniform(-10, 10, n),
        'rlnDefocusU': rng.uniform(8000, 30000, n), 'rlnDefocusV': rng.uniform(8000, 30000, n),
        'rlnDefocusAngle': rng.uniform(0, 180, n), 'rlnPhaseShift': np.zeros(n),
        'rlnOpticsGroup': np.ones(n, dtype=int), 'rlnRandomSubset': np.arange(n) % 2 + 1,
        'rlnVoltage': 300.0, 'rlnSphericalAberration': 2.7, 'rlnAmplitudeContrast': 0.1,
        'rlnImagePixelSize': PIXEL_SIZE, 'rlnImageSize': BOX,
    })


def naive_conversion(particles, outdir, root):
    """The same outputs, one particle at a time."""
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / 'stacks').mkdir(exist_ok=True)
    rotations, translations, ctf, lines, ids, links = [], [], [], [], [], {}
    for i, row in particles.iterrows():
        rotations.append(Rotation.from_euler(
            'ZYZ', [row.rlnAngleRot, row.rlnAngleTilt, row.rlnAnglePsi], degrees=True)
            .inv().as_matrix())
        translations.append([row.rlnOriginXAngst / PIXEL_SIZE / BOX,
                             row.rlnOriginYAngst / PIXEL_SIZE / BOX])
        phase = 0.0 if np.isnan(row.rlnPhaseShift) else row.rlnPhaseShift
        ctf.append([BOX, PIXEL_SIZE, row.rlnDefocusU, row.rlnDefocusV, row.rlnDefocusAngle,
                    row.rlnVoltage, row.rlnSphericalAberration, row.rlnAmplitudeContrast, phase])
        index, path = row.rlnImageName.split('@')
        if path not in links:
            source = root / path
            header = validate_mrc(source)
            if header['shape'][1:] != (BOX, BOX):
                raise ValueError(source)
            link = outdir / 'stacks' / f'{len(links) + 1:05d}_{source.name}'
            if link.is_symlink():
                link.unlink()
            os.symlink(source, link)
            links[path] = f'stacks/{link.name}'
        lines.append(f'{index}@{links[path]}\t1\t{row.rlnAngleRot:.6f}\t{row.rlnAngleTilt:.6f}\t'
                     f'{row.rlnAnglePsi:.6f}\t{row.rlnOriginXAngst:.6f}\t'
                     f'{row.rlnOriginYAngst:.6f}\t{row.rlnDefocusU:.6f}\t{row.rlnDefocusV:.6f}\t'
                     f'{row.rlnDefocusAngle:.6f}\t{phase:.6f}\t{row.rlnRandomSubset}\n')
        ids.append(f'{i},{i + 1},{row.rlnImageName}\n')
    with open(outdir / 'poses.pkl', 'wb') as fh:
        pickle.dump((np.array(rotations, np.float32), np.array(translations, np.float32)), fh)
    with open(outdir / 'ctf.pkl', 'wb') as fh:
        pickle.dump(np.array(ctf, np.float32), fh)
    with open(outdir / 'particles.star', 'w') as fh:
        fh.write('data_particles\n\nloop_\n' + ''.join(f'_rln{c} #{k}\n' for k, c in enumerate(
            ['ImageName', 'OpticsGroup', 'AngleRot', 'AngleTilt', 'AnglePsi', 'OriginXAngst',
             'OriginYAngst', 'DefocusU', 'DefocusV', 'DefocusAngle', 'PhaseShift',
             'RandomSubset'], 1)))
        fh.writelines(lines)
    with open(outdir / 'id_map.csv', 'w') as fh:
        fh.write('row,particle_id,image\n')
        fh.writelines(ids)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--n', type=int, default=200_000, help='particles (default 200000)')
    parser.add_argument('--naive', type=int, default=20_000,
                        help='particles converted by the per-row loop (default 20000)')
    args = parser.parse_args()

    root = OUTPUT / 'recovar_bench'
    n_stacks = int(np.ceil(args.n / PER_STACK))
    tic = time.perf_counter()
    sparse_stacks(root / 'Extract', n_stacks)
    particles = particle_table(args.n, 'Extract')
    print(f'{args.n} particles in {n_stacks} stacks of {PER_STACK} x {BOX} px '
          f'(set up in {time.perf_counter() - tic:.1f} s)')

    fast_dir, naive_dir = root / 'fast', root / 'naive'
    for folder in (fast_dir, naive_dir):
        shutil.rmtree(folder, ignore_errors=True)
    tic = time.perf_counter()
    inputs = cryodrgn.write_recovar_inputs(particles, fast_dir, PIXEL_SIZE, BOX, image_root=root)
    fast = time.perf_counter() - tic
    print(f'(1) write_recovar_inputs: {fast:.2f} s for {inputs.n_particles} particles '
          f'({inputs.n_particles / fast:,.0f} particles/s); goal < 10 s: '
          f'{"met" if fast < 10 else "NOT met"}')

    subset = particles.iloc[:args.naive]
    tic = time.perf_counter()
    naive_conversion(subset, naive_dir, root)
    naive = time.perf_counter() - tic
    naive_all = naive * args.n / len(subset)
    print(f'(2) per-row loop: {naive:.2f} s for {len(subset)} particles '
          f'({len(subset) / naive:,.0f} particles/s), {naive_all:.1f} s extrapolated to {args.n}')
    print(f'    ratio (per-row loop / vectorised): {naive_all / fast:.1f}x')

    rot, trans = cryodrgn.read_poses_pkl(inputs.poses)
    with open(naive_dir / 'poses.pkl', 'rb') as fh:
        naive_rot, naive_trans = pickle.load(fh)
    with open(naive_dir / 'ctf.pkl', 'rb') as fh:
        naive_ctf = pickle.load(fh)
    k = len(subset)
    same = (np.allclose(rot[:k], naive_rot, atol=1e-6) and np.allclose(trans[:k], naive_trans)
            and np.array_equal(cryodrgn.read_ctf_pkl(inputs.ctf)[:k], naive_ctf))
    print(f'    same poses and CTF from both: {same}')
    shutil.rmtree(root, ignore_errors=True)
    return 0 if same else 1


if __name__ == '__main__':
    sys.exit(main())
