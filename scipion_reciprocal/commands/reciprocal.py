"""``scipion-reciprocal reciprocal``: reciprocal analysis of RELION classification jobs.

Reads the last (or a given) iteration of two or more Class3D / Class2D jobs, compares their
classes and writes matrices, statistics, consensus groups, subset STAR files and plots (the
same files as the Scipion protocol; see :mod:`scipion_reciprocal.core.reciprocal_io`).
"""
import sys
from pathlib import Path

DEFAULT_OUTDIR = 'reciprocal_output'


def register(subparsers):
    parser = subparsers.add_parser(
        'reciprocal', help='compare RELION classification jobs (which classes share particles)',
        description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument('--class3d_dir', '--jobs_dir', dest='jobs_dir', metavar='DIR',
                       help='a job-type folder (e.g. PROJECT/Class3D): job numbers are looked '
                            'up in it')
    where.add_argument('--relion_dir', metavar='PROJECT',
                       help='a RELION project folder: job numbers are looked up under every '
                            'job-type folder (Class3D, Class2D, InitialModel, ...)')
    parser.add_argument('--jobs', required=True,
                        help='jobs in analysis order: "85,86,87", "85 86 87" or '
                             '"Class3D/job085,Class2D/job013"')
    parser.add_argument('--outdir', default=DEFAULT_OUTDIR,
                        help=f'output folder (default: ./{DEFAULT_OUTDIR})')
    parser.add_argument('--key', choices=('image', 'original', 'coordinates'), default='image',
                        help='particle identity: image location index@stack (default), '
                             'original image name, or micrograph + coordinates')
    parser.add_argument('--tolerance-angstrom', type=float, default=10.0, metavar='A',
                        help='largest distance between coordinates of one particle in two '
                             'jobs (with --key coordinates; default 10)')
    parser.add_argument('--pixel-size', type=float, metavar='A',
                        help='micrograph pixel size for --key coordinates (default: from '
                             'data_optics)')
    parser.add_argument('--min-confidence', type=float, metavar='P',
                        help='leave out rows whose rlnMaxValueProbDistribution is below P')
    parser.add_argument('--min-overlap', type=int, default=1, metavar='N',
                        help='write an intersection subset only from N shared particles '
                             '(default 1)')
    parser.add_argument('--min-fraction', type=float, default=0.0, metavar='F',
                        help='... and only when it holds at least this fraction of one of the '
                             'two classes (default 0)')
    parser.add_argument('--min-group-size', type=int, default=1, metavar='N',
                        help='keep consensus groups of at least N particles (default 1)')
    parser.add_argument('--iteration', type=int, metavar='N',
                        help='iteration to read (default: the last one of each job)')
    parser.add_argument('--no-subsets', action='store_true',
                        help='do not write per-class and intersection STAR files')
    parser.add_argument('--no-plots', action='store_true', help='do not draw figures')
    parser.set_defaults(func=run)


def run(args):
    from ..core import relion_jobs
    from ..core.reciprocal import (ReciprocalError, classifications_from_relion,
                                   reciprocal_analysis)
    from ..core.reciprocal_io import write_results
    from ..formats.errors import FormatError
    try:
        classifications = classifications_from_relion(
            args.jobs, project_dir=args.relion_dir, jobs_dir=args.jobs_dir,
            iteration=args.iteration, key=args.key, pixel_size=args.pixel_size,
            read_confidence=args.min_confidence is not None)
        result = reciprocal_analysis(
            classifications, min_confidence=args.min_confidence,
            tolerance=args.tolerance_angstrom, min_group_size=args.min_group_size,
            min_overlap=args.min_overlap, min_fraction=args.min_fraction)
        outdir = Path(args.outdir)
        written = write_results(result, outdir, subsets=not args.no_subsets)
        plots = []
        if not args.no_plots:
            from ..plotting.reciprocal import save_plots
            histories = {c.name: relion_jobs.read_job_history(c.job_dir) for c in classifications}
            maps = {}
            for c in classifications:
                try:
                    maps[c.name] = relion_jobs.class_maps(c.job_dir, args.iteration)
                except FormatError:
                    maps[c.name] = None
            plots = save_plots(result, outdir, histories, maps)
    except (FormatError, ReciprocalError, ValueError) as exc:
        print(f'scipion-reciprocal reciprocal: error: {exc}', file=sys.stderr)
        return 2
    _report(result, written, plots, outdir)
    return 0


def _report(result, written, plots, outdir):
    jobs = result.jobs
    print(f'{len(jobs)} jobs: ' + ', '.join(f'{j.job} ({j.rows} rows)' for j in jobs.itertuples()))
    print(f'particles shared by all jobs: {int(jobs["rows_shared"].iloc[0])} rows, '
          f'{int(jobs["images_shared"].iloc[0])} unique images')
    for row in result.agreement.itertuples():
        print(f'  {row.job1} x {row.job2}: ARI {row.adjusted_rand:.3f}, '
              f'NMI {row.normalized_mutual_info:.3f}')
    kept = result.consensus[result.consensus['kept']]
    print(f'consensus groups: {len(kept)} kept of {len(result.consensus)}')
    for warning in result.warnings:
        print(f'warning: {warning}')
    print(f'files written under {outdir}:')
    for path in written['tables'] + written['summary'] + plots:
        print(f'  {path}')
    print(f'  {outdir / "matrices"}/ ({len(written["matrices"])} wide matrices)')
    for category in ('per_class', 'intersections'):
        if written[category]:
            print(f'  {outdir / category}/ ({len(written[category])} STAR files)')
