"""Benchmark of the consensus verdict (issue 13): the command line with and without it.

Uses the RELION 3.1 ``run_it025_data.star`` files of ``bench_reciprocal.py`` (generated once
under ``benchmarks/output/``: N particles x K classes x J jobs, 25 columns as RELION writes
them) and runs, each in its own process and alternately, ``scipion-reciprocal reciprocal``

(a) with ``--no-verdict``: the tables, subsets and plots of the analysis only;
(b) as it is by default: the same plus significance, reproducibility, merging, stability,
    the stable/unstable particle STAR files, ``rlnReciprocalStability`` in every subset STAR
    file and the verdict's four figures.

Printed: wall and CPU (user + sys) time and peak resident memory of every run, the means,
and the ratio (b)/(a); then, in this process, how long each part of the verdict takes on the
same analysis. Usage::

    flock /work/wt/bench.lock python benchmarks/bench_verdict.py     # 1,000,000 x 4 x 8
    python benchmarks/bench_verdict.py --particles 100000 --repeats 1
"""
import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_reciprocal import generate  # noqa: E402


#: The child process: the command line's ``main``, then its own peak resident memory.
CHILD = ('import resource, sys\n'
         'from scipion_reciprocal.cli import main\n'
         'status = main(sys.argv[1:])\n'
         'print("peak resident memory: %.0f MB" % (resource.getrusage(resource.RUSAGE_SELF)'
         '.ru_maxrss / 1024))\n'
         'sys.exit(status)\n')


def run_cli(data, outdir, verdict):
    """One ``scipion-reciprocal reciprocal`` run in a child process: (wall s, CPU s of the
    child, its output)."""
    shutil.rmtree(outdir, ignore_errors=True)
    command = [sys.executable, '-c', CHILD, 'reciprocal', '--class3d_dir',
               str(data / 'Class3D'), '--jobs', ','.join(p.name[3:] for p in
                                                          sorted((data / 'Class3D').iterdir())),
               '--outdir', str(outdir), '--min-fraction', '0.05']
    if not verdict:
        command.append('--no-verdict')
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        sys.exit(f'the command line failed:\n{done.stderr}')
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def peak_rss_of(command_stdout):
    for line in command_stdout.splitlines():
        if line.startswith('peak resident memory:'):
            return float(line.split()[3])
    return float('nan')


def parts(data):
    """Seconds of each part of the verdict, in this process, on the same analysis."""
    from scipion_reciprocal.core.reciprocal import classification_from_star, reciprocal_analysis
    from scipion_reciprocal.core.reciprocal_io import write_subsets
    from scipion_reciprocal.core.verdict import consensus_verdict
    from scipion_reciprocal.formats.result_folder import ResultFolder
    from scipion_reciprocal.plotting.verdict import save_verdict_plots
    paths = sorted((data / 'Class3D').glob('job*/run_it025_data.star'))
    result = reciprocal_analysis([classification_from_star(p) for p in paths], min_fraction=0.05)
    out = {}
    start = time.perf_counter()
    result.verdict = consensus_verdict(result)
    out['significance, reproducibility, merging, stability'] = time.perf_counter() - start
    folder = HERE / 'output' / 'verdict_parts'
    shutil.rmtree(folder, ignore_errors=True)
    with ResultFolder(folder, overwrite=True) as target:
        start = time.perf_counter()
        save_verdict_plots(result, target, 'plots')
        out['the four figures'] = time.perf_counter() - start
        subsets, result.subsets = result.subsets, []
        start = time.perf_counter()
        write_subsets(result, target)
        out['stable + unstable particle STAR files'] = time.perf_counter() - start
        result.subsets = subsets
    shutil.rmtree(folder, ignore_errors=True)
    return out, result.verdict.sentence


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--particles', type=int, default=1_000_000)
    parser.add_argument('--jobs', type=int, default=4)
    parser.add_argument('--classes', type=int, default=8)
    parser.add_argument('--repeats', type=int, default=2,
                        help='runs of each variant, alternated (default 2)')
    parser.add_argument('--workdir', default=str(HERE / 'output'))
    args = parser.parse_args(argv)
    work = Path(args.workdir)
    data = work / f'data_{args.particles}x{args.jobs}x{args.classes}'
    print(f'input: {args.particles} particles x {args.jobs} jobs x {args.classes} classes in '
          f'{data}', flush=True)
    generate(data, args.particles, args.classes, args.jobs)
    print(f'{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}', flush=True)
    figures = {False: [], True: []}
    for repeat in range(args.repeats):
        for verdict in (False, True):
            outdir = work / f'result_verdict_{verdict}'
            wall, cpu, stdout = run_cli(data, outdir, verdict)
            rss = peak_rss_of(stdout)
            figures[verdict].append((wall, cpu, rss))
            print(f'  run {repeat + 1} {"with" if verdict else "without"} the verdict: '
                  f'{wall:6.1f} s wall, {cpu:6.1f} s CPU, peak {rss:5.0f} MB', flush=True)
            shutil.rmtree(outdir, ignore_errors=True)
    mean = {v: [sum(x[i] for x in runs) / len(runs) for i in range(3)]
            for v, runs in figures.items()}
    print(f'\nwithout the verdict (--no-verdict): {mean[False][0]:.1f} s wall, '
          f'{mean[False][1]:.1f} s CPU, peak {max(x[2] for x in figures[False]):.0f} MB')
    print(f'with the verdict (default):         {mean[True][0]:.1f} s wall, '
          f'{mean[True][1]:.1f} s CPU, peak {max(x[2] for x in figures[True]):.0f} MB')
    print(f'ratio with / without: {mean[True][0] / mean[False][0]:.3f} wall, '
          f'{mean[True][1] / mean[False][1]:.3f} CPU (target <= 1.20; peak target < 2048 MB)')
    timings, sentence = parts(data)
    print(f'\nthe verdict\'s parts, in this process ({sentence}):')
    for name, seconds in timings.items():
        print(f'  {name:<52s} {seconds:6.2f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
