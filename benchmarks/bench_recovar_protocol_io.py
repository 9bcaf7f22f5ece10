"""Benchmark of the RECOVAR protocols' Scipion side (issue 5): 200,000 particles in a Scipion set.

What the RECOVAR pipeline protocol does before and after RECOVAR runs, timed in this run on a
SetOfParticles of N particles (CTF, 3D alignment; stacks as in ``bench_recovar_conversion.py``:
sparse MRC files with real headers):

(1) input: ``particles_table`` (SQL read of the set) + ``write_recovar_inputs`` (poses.pkl,
    ctf.pkl, id map, linked stacks, particles.star), what ``convertParticlesStep`` calls;
(2) output: the particles with their latent coordinates attached (two latent spaces,
    regularised and not: four CsvList attributes), by SQL (``write_item_subset`` +
    ``add_item_attributes``, what ``createOutputStep`` calls), against the Scipion API way
    (``copyItems`` with a callback setting the attributes, on a set of the first ``--naive``
    particles, extrapolated).

The set is made without a Python object per particle: a few particles through the Scipion
API, then their rows repeated by SQL with each particle's own id, image index and stack.
Usage::

    python benchmarks/bench_recovar_protocol_io.py [--n 200000] [--naive 20000]
"""
import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_recovar_conversion import BOX, OUTPUT, PER_STACK, PIXEL_SIZE, sparse_stacks  # noqa: E402

ZDIMS = (2, 4)


def configure(home):
    """Point Scipion at a throw-away home (before pyworkflow is imported)."""
    from scipion_reciprocal import scipion_setup
    scipion_setup.configure(home=home, force=True)


def template_particle(stack):
    import pwem.objects as emobj
    particle = emobj.Particle(location=(1, str(stack)))
    ctf = emobj.CTFModel()
    ctf.setStandardDefocus(15000.0, 14000.0, 30.0)
    particle.setCTF(ctf)
    transform = emobj.Transform()
    transform.setMatrix(np.eye(4))
    particle.setTransform(transform)
    return particle


def build_set(path, n, stacks):
    """SetOfParticles of ``n`` particles, image i of stack i // PER_STACK."""
    import pwem.objects as emobj
    from pwem.constants import ALIGN_PROJ
    particles = emobj.SetOfParticles(filename=str(path))
    particles.setSamplingRate(PIXEL_SIZE)
    particles.setDim((BOX, BOX, 1))
    particles.setAlignment(ALIGN_PROJ)
    particles.setHasCTF(True)
    particles.setAcquisition(emobj.Acquisition(voltage=300.0, sphericalAberration=2.7,
                                               amplitudeContrast=0.1, magnification=50000))
    particles.append(template_particle(stacks[0]))
    particles.write()
    particles.close()
    with closing(sqlite3.connect(str(path))) as conn:
        column = dict(conn.execute("SELECT label_property, column_name FROM Classes"))
        names = [row[1] for row in conn.execute("PRAGMA table_info(Objects)")]
        template = conn.execute("SELECT * FROM Objects WHERE id = 1").fetchone()
        conn.execute("DELETE FROM Objects")
        at = {name: k for k, name in enumerate(names)}
        index_col, file_col = at[column["_index"]], at[column["_filename"]]
        stack_names = [str(s) for s in stacks]

        def rows():
            row = list(template)
            for i in range(n):
                row[0] = i + 1
                row[index_col] = i % PER_STACK + 1
                row[file_col] = stack_names[i // PER_STACK]
                yield tuple(row)
        conn.executemany("INSERT INTO Objects VALUES (%s)" % ",".join("?" * len(names)), rows())
        conn.execute("UPDATE Properties SET value = ? WHERE key = '_size'", (str(n),))
        conn.commit()
    particles = emobj.SetOfParticles(filename=str(path))
    particles.loadAllProperties()  # sampling rate, CTF and alignment flags, acquisition
    return particles


def latent_attributes(n, rng):
    from scipion_reciprocal.protocols.protocol_recovar_pipeline import latentAttribute
    return {latentAttribute(z, reg): rng.normal(size=(n, z)) for z in ZDIMS for reg in (True, False)}


def sql_output(particles, target, ids, coords):
    """What the pipeline's output step does (``_particlesWithLatents``)."""
    from scipion_reciprocal.convert.set_sql import add_item_attributes, write_item_subset
    write_item_subset(particles.getFileName(), target, ids)
    add_item_attributes(target, ids, {
        name: ("CsvList", [",".join("%.6g" % v for v in row) for row in values])
        for name, values in coords.items()})


def api_output(particles, target, ids, coords):
    """The Scipion API way: one particle object at a time."""
    import pwem.objects as emobj
    from pyworkflow.object import CsvList
    rowOf = {int(i): r for r, i in enumerate(ids)}

    def attach(particle, row=None):
        r = rowOf[particle.getObjId()]
        for name, values in coords.items():
            value = CsvList(pType=float)
            value.set(["%.6g" % v for v in values[r]])
            setattr(particle, name, value)
    out = emobj.SetOfParticles(filename=str(target))
    out.copyInfo(particles)
    out.copyItems(particles, updateItemCallback=attach)
    out.write()
    out.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--n', type=int, default=200_000, help='particles (default 200000)')
    parser.add_argument('--naive', type=int, default=20_000,
                        help='particles written through the Scipion API (default 20000)')
    args = parser.parse_args()
    OUTPUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix='recovar-protocol-io-', dir=OUTPUT))
    configure(work / 'scipion-home')
    from scipion_reciprocal.convert.particles import particles_table
    from scipion_reciprocal.formats import cryodrgn
    from scipion_reciprocal.formats.relion import merge_optics

    try:
        n_stacks = int(np.ceil(args.n / PER_STACK))
        tic = time.perf_counter()
        sparse_stacks(work / 'Extract', n_stacks)
        stacks = [work / 'Extract' / f'mic_{k:05d}.mrcs' for k in range(n_stacks)]
        particles = build_set(work / 'particles.sqlite', args.n, stacks)
        print(f'SetOfParticles of {particles.getSize()} particles in {n_stacks} stacks of '
              f'{BOX} px (made in {time.perf_counter() - tic:.1f} s)')

        tic = time.perf_counter()
        table, optics = particles_table(particles)
        read = time.perf_counter() - tic
        inputs = cryodrgn.write_recovar_inputs(
            merge_optics(table, optics), work / 'inputs', PIXEL_SIZE, BOX,
            ids=table['scipionId'].to_numpy(np.int64), image_root=work)
        total = time.perf_counter() - tic
        print(f'(1) input conversion from the set: {total:.2f} s for {inputs.n_particles} '
              f'particles ({read:.2f} s reading the set by SQL); goal < 10 s')

        ids = cryodrgn.read_id_map(work / 'inputs' / cryodrgn.ID_MAP_CSV)
        coords = latent_attributes(len(ids), np.random.default_rng(0))
        tic = time.perf_counter()
        sql_output(particles, work / 'out_sql.sqlite', ids, coords)
        fast = time.perf_counter() - tic
        print(f'(2) particles with {len(coords)} latent attributes, by SQL: {fast:.2f} s')

        # The same particles' first --naive rows as a set of their own (ids 1..naive).
        small = build_set(work / 'particles_small.sqlite', args.naive, stacks)
        naive_ids = np.arange(1, args.naive + 1)
        rows = np.argsort(ids)[:args.naive]  # RECOVAR rows of particles 1..naive
        naive_coords = {k: v[rows] for k, v in coords.items()}
        tic = time.perf_counter()
        api_output(small, work / 'out_api.sqlite', naive_ids, naive_coords)
        naive = time.perf_counter() - tic
        naive_all = naive * len(ids) / len(naive_ids)
        print(f'    through the Scipion API: {naive:.2f} s for {len(naive_ids)} particles '
              f'-> {naive_all:.1f} s for {len(ids)} (extrapolated)')
        print(f'    ratio (Scipion API / SQL): {naive_all / fast:.1f}x')

        import pwem.objects as emobj
        sql_set, api_set = (emobj.SetOfParticles(filename=str(work / name))
                            for name in ('out_sql.sqlite', 'out_api.sqlite'))
        name = next(iter(coords))
        same = all(list(a.getAttributeValue(name)) == list(b.getAttributeValue(name))
                   for a, b in zip(sql_set.iterItems(limit=1000), api_set.iterItems(limit=1000)))
        print(f'    same {name} on the first 1000 particles from both: {same}')
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
