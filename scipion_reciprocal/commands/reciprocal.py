"""``scipion-reciprocal reciprocal``: reciprocal analysis of RELION classification jobs.

Reads the last (or a given) iteration of two or more Class3D / Class2D jobs, compares their
classes and writes matrices, statistics, consensus groups, the consensus verdict (significance,
reproducible states, merged groups, stable and unstable particles), subset STAR files and
plots (the same files as the Scipion protocol; see :mod:`scipion_reciprocal.core.reciprocal_io`).
The output folder is checked (writable, empty or an earlier result with --overwrite, enough
free space) before anything is written; ``manifest.json``, written last, marks it complete.
"""
from pathlib import Path

from ..core.verdict import ALPHA, JACCARD_THRESHOLD, STABILITY_THRESHOLD
from .errors import fail, interrupted, os_error_text

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
                        help=f'output folder (default: ./{DEFAULT_OUTDIR}); it must be new or '
                             f'empty, unless --overwrite')
    parser.add_argument('--overwrite', action='store_true',
                        help='reuse an output folder of an earlier run: the files its manifest '
                             '(or an interrupted run\'s journal) lists are removed first, '
                             'nothing else')
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
    parser.add_argument('--only-particles', metavar='STAR',
                        help='analyse only the particles of this particles STAR file (matched '
                             'by --key), e.g. those a classifier kept; the other rows of every '
                             'job are left out')
    parser.add_argument('--iteration', type=int, metavar='N',
                        help='iteration to read (default: the last one of each job)')
    parser.add_argument('--no-subsets', action='store_true',
                        help='do not write per-class and intersection STAR files')
    parser.add_argument('--no-plots', action='store_true', help='do not draw figures')
    verdict = parser.add_argument_group('consensus verdict')
    verdict.add_argument('--jaccard-threshold', type=float, default=JACCARD_THRESHOLD,
                         metavar='J',
                         help='a class is reproduced in another run when the two classes are '
                              'each other\'s best match, their intersection is significant '
                              'and their Jaccard index is at least J (default '
                              f'{JACCARD_THRESHOLD:g}: '
                              'two classes of one size sharing a bit less than half of their '
                              'particles)')
    verdict.add_argument('--fdr', type=float, default=ALPHA, metavar='Q',
                         help='false discovery rate: intersections and consensus groups with '
                              f'a Benjamini-Hochberg q-value up to Q are significant (default '
                              f'{ALPHA:g})')
    verdict.add_argument('--stability-threshold', type=float, default=STABILITY_THRESHOLD,
                         metavar='S',
                         help='a particle is stable when the fraction of run pairs whose '
                              'classes of it are reproduced is at least S and its consensus '
                              f'group is significant (default {STABILITY_THRESHOLD:g}: with 4 '
                              'runs or fewer, every pair)')
    verdict.add_argument('--merge-distance', type=float, metavar='D',
                         help='merge significant consensus groups joined at a distance up to '
                              'D (0-1; default: cut at the largest gap between merge heights)')
    verdict.add_argument('--no-verdict', action='store_true',
                         help='skip significance, reproducibility, merging and stability '
                              '(the tables, subsets and plots of the analysis only)')
    parser.set_defaults(func=run)


def _check_verdict_options(args):
    """A one-line message naming the first option outside its range, or None."""
    if args.no_verdict:
        return None
    for option, value in (('--jaccard-threshold', args.jaccard_threshold), ('--fdr', args.fdr),
                          ('--stability-threshold', args.stability_threshold),
                          ('--merge-distance', args.merge_distance)):
        if value is not None and not 0.0 <= value <= 1.0:
            return f'{option} must be between 0 and 1 (got {value:g})'
    return None


def _class_maps(classifications, iteration):
    from ..core import relion_jobs
    from ..formats.errors import FormatError
    maps = {}
    for c in classifications:
        try:
            maps[c.name] = relion_jobs.class_maps(c.job_dir, iteration)
        except FormatError:
            maps[c.name] = None
    return maps


def run(args):
    from ..core import relion_jobs
    from ..core.reciprocal import (ReciprocalError, classifications_from_relion,
                                   keys_from_star, reciprocal_analysis)
    from ..core.reciprocal_io import check_subset_sources, expected_size, write_results
    from ..core.verdict import class_map_correlations, consensus_verdict
    from ..formats.errors import FormatError
    from ..formats.result_folder import ResultFolder, check_output_folder
    problem = _check_verdict_options(args)
    if problem:
        return fail('reciprocal', problem)
    outdir = Path(args.outdir)
    out = ResultFolder(outdir, overwrite=args.overwrite, producer='scipion-reciprocal reciprocal')
    started = False
    try:
        check_output_folder(outdir, overwrite=args.overwrite)
        classifications = classifications_from_relion(
            args.jobs, project_dir=args.relion_dir, jobs_dir=args.jobs_dir,
            iteration=args.iteration, key=args.key, pixel_size=args.pixel_size,
            read_confidence=args.min_confidence is not None)
        if not args.no_subsets or not args.no_verdict:  # stable/unstable particles too
            check_subset_sources(classifications)
        only = keys_from_star(args.only_particles, args.key, args.pixel_size) \
            if args.only_particles else None
        result = reciprocal_analysis(
            classifications, min_confidence=args.min_confidence,
            tolerance=args.tolerance_angstrom, min_group_size=args.min_group_size,
            min_overlap=args.min_overlap, min_fraction=args.min_fraction, only=only)
        maps = _class_maps(classifications, args.iteration)
        if not args.no_verdict:
            result.verdict = consensus_verdict(
                result, jaccard_threshold=args.jaccard_threshold, alpha=args.fdr,
                stability_threshold=args.stability_threshold, merge_distance=args.merge_distance,
                map_correlations=class_map_correlations(result, maps))
        out.require_space(expected_size(result, subsets=not args.no_subsets,
                                        plots=not args.no_plots), 'the results')
        started = True
        with out:
            written = write_results(result, out, subsets=not args.no_subsets)
            plots = []
            if not args.no_plots:
                from ..plotting.reciprocal import save_plots
                histories = {c.name: relion_jobs.read_job_history(c.job_dir)
                             for c in classifications}
                plots = save_plots(result, out, histories, maps)
    except (FormatError, ReciprocalError, ValueError) as exc:
        return fail('reciprocal', exc)
    except OSError as exc:
        return fail('reciprocal', os_error_text(exc))
    except KeyboardInterrupt:
        return interrupted('reciprocal', outdir, started)
    _report(result, written, plots, outdir)
    return 0


def _report(result, written, plots, outdir):
    jobs = result.jobs
    if result.verdict is not None:
        summary = result.verdict.summary
        print(f'verdict: {result.verdict.sentence}')
        for state in summary['states']:
            print(f'  state: group {state["group"]} ({state["size"]} particles): ' +
                  ', '.join(f'{job} class {c}' for job, c in state['classes'].items()))
        print('  reproduced classes: ' + ', '.join(
            f'{job} {n} of {summary["classes"][job]}'
            for job, n in summary['reproduced_classes'].items()))
        print(f'  {summary["significant_groups"]} significant consensus groups of '
              f'{summary["consensus_groups"]}, merged into {summary["merged_groups"]}; '
              f'{summary["stable_particles"]} stable and {summary["unstable_particles"]} '
              f'unstable particles')
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
    print(f'files written under {outdir} (complete: manifest.json lists them):')
    for path in written['tables'] + written['summary'] + plots:
        print(f'  {path}')
    print(f'  {outdir / "matrices"}/ ({len(written["matrices"])} wide matrices)')
    for path in written['stability']:
        print(f'  {path}')
    for category in ('per_class', 'intersections'):
        if written[category]:
            print(f'  {outdir / category}/ ({len(written[category])} STAR files)')
