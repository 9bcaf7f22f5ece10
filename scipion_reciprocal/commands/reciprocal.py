"""``scipion-reciprocal reciprocal``: reciprocal analysis of classifications from any engine.

Reads two or more classifications (RELION Class3D / Class2D jobs, cryoSPARC heterogeneous
refinement, 3D and 2D classification jobs, k-means labels of cryoDRGN or RECOVAR), compares
their classes and writes matrices, statistics, consensus groups, the consensus verdict
(significance, reproducible states, merged groups, stable and unstable particles), subset STAR
(and, for cryoSPARC inputs, ``.cs``) files and plots (the same files as the Scipion protocol; see
:mod:`scipion_reciprocal.core.reciprocal_io` and
:mod:`scipion_reciprocal.core.classification_inputs`).
The output folder is checked (writable, empty or an earlier result with --overwrite, enough
free space) before anything is written; ``manifest.json``, written last, marks it complete.
"""
from pathlib import Path

from ..core.reciprocal import MIN_FRACTION, MIN_OVERLAP
from ..core.verdict import ALPHA, JACCARD_THRESHOLD, STABILITY_THRESHOLD
from .errors import fail, interrupted, os_error_text

DEFAULT_OUTDIR = 'reciprocal_output'


def register(subparsers):
    parser = subparsers.add_parser(
        'reciprocal', help='compare classifications of the same particles (which classes '
                           'share particles): RELION, cryoSPARC, cryoDRGN/RECOVAR labels',
        description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument('--class3d_dir', '--jobs_dir', dest='jobs_dir', metavar='DIR',
                       help='a job-type folder (e.g. PROJECT/Class3D): job numbers are looked '
                            'up in it')
    where.add_argument('--relion_dir', metavar='PROJECT',
                       help='a RELION project folder: job numbers are looked up under every '
                            'job-type folder (Class3D, Class2D, InitialModel, ...)')
    where.add_argument('--cryosparc_dir', metavar='PROJECT',
                       help='a cryoSPARC project folder (P12): --jobs are its classification '
                            'jobs (J30,J31); the final particles with their classes are read '
                            '(job.json\'s particles_all_classes or particles output)')
    where.add_argument('--inputs', nargs='+', metavar='INPUT',
                       help='classifications of any engine, in analysis order: RELION job '
                            'folders or STAR files, cryoSPARC job folders or .cs files, label '
                            'files with their particle file (labels.pkl@particles.star or '
                            '@particles.cs)')
    parser.add_argument('--jobs',
                        help='jobs in analysis order (with --relion_dir, --class3d_dir, '
                             '--cryosparc_dir): "85,86,87", "85 86 87", '
                             '"Class3D/job085,Class2D/job013" or "J30,J31"')
    parser.add_argument('--names', nargs='+', metavar='NAME',
                        help='names of the classifications in tables, file names and plots, '
                             'one per input in order (default: job085, J30, the file name)')
    parser.add_argument('--outdir', default=DEFAULT_OUTDIR,
                        help=f'output folder (default: ./{DEFAULT_OUTDIR}); it must be new or '
                             f'empty, unless --overwrite')
    parser.add_argument('--overwrite', action='store_true',
                        help='reuse an output folder of an earlier run: the files its manifest '
                             '(or an interrupted run\'s journal) lists are removed first, '
                             'nothing else')
    parser.add_argument('--key', choices=('auto', 'uid', 'image', 'original', 'coordinates'),
                        help='particle identity: cryoSPARC uid, image location (index@stack, '
                             'blob/path + blob/idx), original image name (RELION only), or '
                             'micrograph + coordinates; default: image for --relion_dir and '
                             '--class3d_dir, auto otherwise (uid, image, coordinates: the one '
                             'under which the runs share most particles)')
    parser.add_argument('--tolerance-angstrom', type=float, default=10.0, metavar='A',
                        help='largest distance between coordinates of one particle in two '
                             'jobs (with --key coordinates; default 10)')
    parser.add_argument('--pixel-size', type=float, metavar='A',
                        help='micrograph pixel size for --key coordinates (default: from '
                             'data_optics, or location/micrograph_psize_A in cryoSPARC files)')
    parser.add_argument('--min-confidence', type=float, metavar='P',
                        help='leave out rows whose rlnMaxValueProbDistribution (cryoSPARC: '
                             'class_posterior) is below P')
    parser.add_argument('--min-overlap', type=int, default=MIN_OVERLAP, metavar='N',
                        help='write an intersection subset only from N shared particles '
                             f'(default {MIN_OVERLAP}, as the protocol)')
    parser.add_argument('--min-fraction', type=float, default=MIN_FRACTION, metavar='F',
                        help='... and only when it holds at least this fraction of one of the '
                             f'two classes (default {MIN_FRACTION:g}, as the protocol)')
    parser.add_argument('--all-intersections', action='store_true',
                        help='write the intersection subset of every class pair that shares '
                             'particles (the same as --min-overlap 1 --min-fraction 0)')
    parser.add_argument('--min-group-size', type=int, default=1, metavar='N',
                        help='keep consensus groups of at least N particles (default 1)')
    parser.add_argument('--only-particles', metavar='STAR',
                        help='analyse only the particles of this particles STAR file (matched '
                             'by --key), e.g. those a classifier kept; the other rows of every '
                             'job are left out')
    parser.add_argument('--iteration', type=int, metavar='N',
                        help='iteration to read (default: the last one of each job)')
    parser.add_argument('--no-subsets', action='store_true',
                        help='do not write per-class and intersection STAR (and .cs) files')
    parser.add_argument('--plots', choices=('all', 'summary', 'none'), default='summary',
                        help='figures to draw (in a separate process, while the tables and '
                             'STAR files are written): summary (default) = Sankey diagrams, '
                             'agreement, convergence, class slices and the verdict\'s figures; '
                             'all = also the count/fraction/Jaccard heatmap of every job pair '
                             '(their numbers are in matrices/ either way); none')
    parser.add_argument('--no-plots', dest='plots', action='store_const', const='none',
                        help='the same as --plots none')
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
    """Class maps of the RELION jobs and of cryoSPARC jobs (their class volumes or 2D
    averages); None for other inputs and jobs without maps."""
    from ..core import relion_jobs
    from ..formats.errors import FormatError
    maps = {}
    for c in classifications:
        if c.job_dir is None:
            maps[c.name] = c.class_maps
            continue
        try:
            maps[c.name] = relion_jobs.class_maps(c.job_dir, iteration)
        except FormatError:
            maps[c.name] = None
    return maps


def _histories(classifications):
    """Per-iteration figures of the RELION jobs, for their convergence plots."""
    from ..core import relion_jobs
    return {c.name: relion_jobs.read_job_history(c.job_dir) for c in classifications
            if c.job_dir is not None}


def run(args):
    from ..core.classification_inputs import attach_star_sources
    from ..core.reciprocal import ReciprocalError, keys_from_star, reciprocal_analysis
    from ..core.reciprocal_io import (INPUTS_DIR, check_subset_sources, expected_size,
                                      write_results)
    from ..core.verdict import class_map_correlations, consensus_verdict
    from ..formats.errors import FormatError
    from ..formats.result_folder import ResultFolder, check_output_folder
    from ..plotting.background import start_plots
    problem = _check_verdict_options(args)
    if problem:
        return fail('reciprocal', problem)
    if args.all_intersections:
        args.min_overlap, args.min_fraction = 1, 0.0
    outdir = Path(args.outdir)
    out = ResultFolder(outdir, overwrite=args.overwrite, producer='scipion-reciprocal reciprocal')
    started = False
    try:
        check_output_folder(outdir, overwrite=args.overwrite)
        classifications = _read_classifications(args)
        write_stars = not args.no_subsets or not args.no_verdict  # stable/unstable particles
        if write_stars:
            check_subset_sources(classifications)
        # --inputs and --cryosparc_dir compare micrographs by stem (across software)
        only = keys_from_star(args.only_particles, _star_key(args, classifications),
                              args.pixel_size, micrograph_stems=args.inputs is not None
                              or args.cryosparc_dir is not None) if args.only_particles else None
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
                                        plots=args.plots != 'none'), 'the results')
        started = True
        with out:
            if write_stars:
                attach_star_sources(classifications, out, INPUTS_DIR)
            # The figures are drawn in another process while this one writes the files.
            drawing = start_plots(result, out, lambda: (_histories(classifications), maps),
                                  args.plots, processes=1 + (args.plots == 'all'))
            written = write_results(result, out, subsets=not args.no_subsets)
            plots = drawing.wait()
    except (FormatError, ReciprocalError, ValueError) as exc:
        return fail('reciprocal', exc)
    except OSError as exc:
        return fail('reciprocal', os_error_text(exc))
    except KeyboardInterrupt:
        return interrupted('reciprocal', outdir, started)
    _report(result, written, plots, outdir)
    return 0


def _star_key(args, classifications):
    """The key that matches an --only-particles STAR file with the classifications."""
    kind = classifications[0].keys.kind
    if kind == 'coordinates':
        return 'coordinates'
    if kind != 'location':
        raise ValueError(f'--only-particles matches particles by image location or coordinates; '
                         f'these inputs were matched by {kind} (give --key image or coordinates)')
    return 'original' if args.key == 'original' else 'image'


def _read_classifications(args):
    """The classifications the arguments name (RELION jobs, cryoSPARC jobs or any inputs)."""
    from ..core.classification_inputs import classifications_from_inputs
    from ..core.reciprocal import classifications_from_relion
    from ..formats.cryosparc_jobs import find_cs_jobs
    if args.inputs is None and not args.jobs:
        raise ValueError('--jobs is required with --relion_dir, --class3d_dir and '
                         '--cryosparc_dir')
    if args.inputs is not None and args.jobs:
        raise ValueError('--jobs goes with --relion_dir, --class3d_dir or --cryosparc_dir, '
                         'not with --inputs (give each input as a path)')
    if args.inputs is None and args.cryosparc_dir is None:
        if args.key in ('auto', 'uid'):
            raise ValueError(f'--key {args.key} is for --inputs and --cryosparc_dir')
        classifications = classifications_from_relion(
            args.jobs, project_dir=args.relion_dir, jobs_dir=args.jobs_dir,
            iteration=args.iteration, key=args.key or 'image', pixel_size=args.pixel_size,
            read_confidence=args.min_confidence is not None)
        if args.names:
            _check_names(args.names, classifications)
            for clf, name in zip(classifications, args.names):
                clf.name = name
        return classifications
    if args.key == 'original':
        raise ValueError('--key original reads RELION files only (--relion_dir)')
    specs = args.inputs or [job.folder for job in find_cs_jobs(args.cryosparc_dir, args.jobs)]
    if args.names:
        _check_names(args.names, specs)
    classifications, note = classifications_from_inputs(
        specs, names=args.names, key=args.key or 'auto', iteration=args.iteration,
        pixel_size=args.pixel_size, read_confidence=args.min_confidence is not None,
        tolerance=args.tolerance_angstrom)
    print(f'particles matched by {note}')
    return classifications


def _check_names(names, inputs):
    if len(names) != len(inputs):
        raise ValueError(f'--names gives {len(names)} names for {len(inputs)} inputs')
    bad = [n for n in names if not n or '/' in n or n != n.strip()]
    if bad:
        raise ValueError(f'--names: {bad[0]!r} cannot name files (no "/", no surrounding '
                         f'blanks)')


def _report(result, written, plots, outdir):
    from ..core.reciprocal_io import intersections_note
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
    if written['per_class'] or written['intersections']:
        print(f'  {intersections_note(result)}')
    if written.get('cryosparc'):
        print(f'  {len(written["cryosparc"])} .cs subsets of cryoSPARC inputs (per_class/, '
              f'intersections/)')
