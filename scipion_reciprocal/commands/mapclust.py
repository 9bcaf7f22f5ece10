"""``scipion-reciprocal mapclust``: cluster maps by similarity, without Scipion.

Writes into OUT: similarity_matrix.csv (square, names as header and index),
cluster_results.csv (name,cluster), transforms.csv, k_selection.csv, mds.csv, the aligned maps
(aligned/), the cluster averages (cluster_averages/), the plots, chimerax_clusters.cxc and
summary.txt. OUT is checked (writable, empty or an earlier result with --overwrite, enough free
space) before the maps are read; manifest.json, written last, marks it complete.
"""
import argparse
import sys
from pathlib import Path

from .errors import fail, interrupted, os_error_text


def _clusters(value):
    if value == 'auto':
        return value
    try:
        k = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of clusters or 'auto', got "
                                         f"{value!r}") from None
    if k < 1:
        raise argparse.ArgumentTypeError(f'the number of clusters must be at least 1, got {k}')
    return k


def _positive(value):
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number, got {value!r}') from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f'expected a positive number, got {value}')
    return number


def register(subparsers):
    parser = subparsers.add_parser(
        'mapclust', help='cluster maps by similarity (alignment, resampling, averages)',
        description='Cluster maps by similarity, without Scipion. Maps of different box or '
        'pixel size are resampled onto the reference map\'s grid; maps are aligned rigidly '
        '(rotation and translation) unless --no-align.',
        epilog=' '.join(__doc__.split('\n\n', 1)[1].split()))
    parser.add_argument('maps', nargs='+', metavar='MAP.mrc', help='input maps (MRC)')
    parser.add_argument('--outdir', required=True,
                        help='output folder (created if needed; new or empty, unless '
                             '--overwrite)')
    parser.add_argument('--overwrite', action='store_true',
                        help='reuse an output folder of an earlier run: the files its manifest '
                             '(or an interrupted run\'s journal) lists are removed first, '
                             'nothing else')
    parser.add_argument('--names', metavar='CSV',
                        help='CSV with header original_filename,custom_name naming every map')
    parser.add_argument('--mask', help='mask (MRC) on the reference map\'s grid, binary or soft')
    parser.add_argument('--clusters', type=_clusters, default='auto', metavar='K|auto',
                        help='number of clusters, or auto (default)')
    parser.add_argument('--k-method', choices=('silhouette', 'elbow'), default='silhouette',
                        help='how auto chooses k (default %(default)s)')
    parser.add_argument('--max-clusters', type=int, default=10,
                        help='largest k tried by auto, at least 2 (default %(default)s)')
    parser.add_argument('--linkage', choices=('average', 'complete', 'ward'), default='average',
                        help='hierarchical linkage (default %(default)s; ward assumes Euclidean '
                             'distances, which 1 - correlation is not)')
    parser.add_argument('--similarity', choices=('correlation', 'fsc'), default='correlation',
                        help='measure used for clustering (default %(default)s)')
    parser.add_argument('--fsc-mode', choices=('resolution', 'mean'), default='resolution',
                        help='FSC similarity: resolution at the threshold over Nyquist, or the '
                             'mean FSC up to --fsc-max-resolution (default %(default)s)')
    parser.add_argument('--fsc-threshold', type=_positive, default=0.143,
                        help='FSC threshold (default %(default)s)')
    parser.add_argument('--fsc-max-resolution', type=_positive, metavar='A',
                        help='resolution limit (A) of the mean FSC (default Nyquist)')
    parser.add_argument('--lowpass', type=_positive, metavar='A',
                        help='low-pass the maps to this resolution (A) before comparing them')
    parser.add_argument('--no-align', dest='align', action='store_false',
                        help='compare the maps as they are (no rotation or translation)')
    parser.add_argument('--align-mode', choices=('reference', 'pairwise'), default='reference',
                        help='align every map to the reference, or every pair (slower; the '
                             'pair score is the similarity) (default %(default)s)')
    parser.add_argument('--mirror', action='store_true',
                        help='also test the mirror image (handedness) of each map')
    parser.add_argument('--reference', default='1',
                        help='reference map: 1-based position or file name (default the first)')
    parser.add_argument('--voxel-size', type=_positive, metavar='A',
                        help='voxel size of every map, overriding the headers')
    parser.add_argument('--memory-gb', type=_positive, default=2.0,
                        help='memory for maps and similarity vectors (default %(default)s GB)')
    parser.add_argument('--no-plots', dest='plots', action='store_false',
                        help='do not draw the figures')
    parser.add_argument('--quiet', action='store_true', help='no progress messages')
    parser.set_defaults(func=run)


def _reference_index(value, maps):
    if value.isdigit():
        index = int(value) - 1
        if not 0 <= index < len(maps):
            raise ValueError(f'--reference {value}: there are {len(maps)} maps')
        return index
    for i, path in enumerate(maps):
        p = Path(path)
        if value in (str(path), p.name, p.stem):
            return i
    raise ValueError(f'--reference {value}: not one of the input maps')


def run(args):
    from ..core.mapsim import MapClusteringError, run_map_clustering
    from ..core.mapsim.engine import check_inputs
    from ..formats.errors import FormatError
    from ..formats.result_folder import ResultFolder, check_output_folder
    from ..plotting.mapclust import save_plots

    if args.max_clusters < 2:
        return fail('mapclust', f'--max-clusters must be at least 2 (automatic choice tries '
                                f'k = 2 .. N), got {args.max_clusters}')
    try:
        reference = _reference_index(args.reference, args.maps)
    except ValueError as exc:
        return fail('mapclust', exc)
    say = None if args.quiet else (lambda message: print(message, flush=True))
    out = ResultFolder(args.outdir, overwrite=args.overwrite,
                       producer='scipion-reciprocal mapclust')
    started = False
    try:
        check_output_folder(args.outdir, overwrite=args.overwrite)
        problems = check_inputs(args.maps, voxel_sizes=args.voxel_size, names_csv=args.names,
                                mask=args.mask, reference=reference)
        if problems:
            more = f' (and {len(problems) - 1} more problems)' if len(problems) > 1 else ''
            return fail('mapclust', problems[0] + more)
        out.require_space(_expected_size(args.maps, args.maps[reference], args.plots),
                          'the aligned maps, averages and plots')
        started = True
        with out:
            result = run_map_clustering(
                args.maps, voxel_sizes=args.voxel_size, names_csv=args.names, mask=args.mask,
                outdir=out, plot=save_plots if args.plots else None, progress=say,
                warn=lambda message: print(f'scipion-reciprocal mapclust: warning: {message}',
                                           file=sys.stderr, flush=True),
                reference=reference, lowpass=args.lowpass, align=args.align,
                align_mode=args.align_mode, mirror=args.mirror, similarity=args.similarity,
                fsc_mode=args.fsc_mode, fsc_threshold=args.fsc_threshold,
                fsc_max_resolution=args.fsc_max_resolution, linkage=args.linkage,
                n_clusters=args.clusters, k_method=args.k_method,
                max_clusters=args.max_clusters, memory_budget=int(args.memory_gb * (1 << 30)),
                workdir=args.outdir)
    except (MapClusteringError, FormatError) as exc:
        return fail('mapclust', exc)
    except OSError as exc:
        return fail('mapclust', os_error_text(exc))
    except KeyboardInterrupt:
        return interrupted('mapclust', args.outdir, started)
    if not args.quiet:
        for label in sorted(result.averages):
            members = [result.names[i] for i, k in enumerate(result.labels) if k == label]
            print(f'cluster {label}: {", ".join(members)}')
        print(f'results in {args.outdir} (complete: manifest.json lists them)')
    return 0


#: Bytes of the figures of one cluster, about (montage, its share of the other plots).
_PLOT_BYTES = 300_000


def _expected_size(maps, reference, plots):
    """Bytes map clustering will write, about: every map and up to as many averages on the
    reference's grid (float32), and the plots."""
    from ..formats.errors import FormatError
    from ..formats.mrc import validate_mrc
    try:
        box = max(validate_mrc(reference)['shape'])
    except FormatError:
        return 0                    # the run names the unreadable map
    return len(maps) * (2 * 4 * box ** 3 + (_PLOT_BYTES if plots else 0)) + (1 << 20)
