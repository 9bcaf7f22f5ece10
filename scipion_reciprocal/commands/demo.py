"""``scipion-reciprocal demo``: the main job, on simulated data."""
import sys

from .. import scipion_setup


def register(subparsers):
    parser = subparsers.add_parser(
        "demo", help="build the demo Scipion project from simulated data and run every protocol",
        description="Simulates a small RELION project (maps, particles, classifications, "
                    "micrographs), creates a Scipion project from it and runs every protocol "
                    "of the plugin in order, then prints where each result is.")
    parser.add_argument("--project", default="reciprocal_demo",
                        help="Scipion project name (replaced if it exists; default %(default)s)")
    parser.add_argument("--data-dir", help="where to write the simulated data "
                                           "(default: $SCIPION_USER_DATA/<project>_data)")
    parser.add_argument("--seed", type=int, default=0, help="simulation seed (default 0)")
    parser.add_argument("--no-backends", action="store_true",
                        help="skip the protocols that need the RECOVAR/TensorFlow environments")
    parser.add_argument("--gui", action="store_true", help="open the project window at the end")
    parser.set_defaults(func=run)


def run(args):
    scipion_setup.configure()
    from ..workflows.demo import DemoError, run_demo

    try:
        result = run_demo(args.project, args.data_dir, seed=args.seed,
                          backends=not args.no_backends)
    except DemoError as error:
        print("scipion-reciprocal demo: %s" % error, file=sys.stderr)
        return 1
    print("\nDemo finished. Scipion project: %s" % result.project_path)
    print("Simulated data: %s" % result.data_dir)
    for label, where in result.results:
        print("  %-40s %s" % (label, where))
    if args.gui:
        from pyworkflow.gui.project import ProjectWindow
        ProjectWindow(str(result.project_path)).show()
    else:
        print("Open it with: scipion-reciprocal demo --gui, or "
              "eval \"$(scipion-reciprocal env)\" && python -m scipion project %s" % args.project)
    return 0
