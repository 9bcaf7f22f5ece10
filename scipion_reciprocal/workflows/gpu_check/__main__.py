"""``python -m scipion_reciprocal.workflows.gpu_check``: the drivers behind scripts/gpu-check.sh.

Exit status: 0 when every phase that ran succeeded, 1 when one failed or ran out of time
(or a wheel folder is unusable), 2 for bad arguments.
"""
import argparse
import dataclasses
import os
import sys

from . import plan as plans
from .wheels import WheelError, install, prepare


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m scipion_reciprocal.workflows.gpu_check",
                                     description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    for name, help_text in (("scipion", "the check through a Scipion project and the protocols"),
                            ("offline", "RECOVAR without Scipion, on this machine's JAX")):
        mode = modes.add_parser(name, help=help_text)
        mode.add_argument("--out", required=True, help="folder of this run (data, logs, report)")
        mode.add_argument("--tiny", action="store_true",
                          help="developer check: CI-sized data (minutes on a CPU)")
        mode.add_argument("--allow-cpu", action="store_true",
                          help="developer check: run without a GPU")
        mode.add_argument("--budget", type=float,
                          help="seconds for all phases (default: the plan's, 600 for the full check)")
        mode.add_argument("--processes", type=int, default=min(16, os.cpu_count() or 1),
                          help="processes for the simulation (default: the cores, at most 16)")
        if name == "scipion":
            mode.add_argument("--install-seconds", type=float,
                              help="how long the installation took (recorded in the report)")
        if name == "offline":
            mode.add_argument("--site", help="folder of the installed wheels (PYTHONPATH of RECOVAR)")
            mode.add_argument("--python", default=sys.executable,
                              help="the Python with JAX that runs RECOVAR (default: this one)")
    for name, help_text in (("prepare", "download the offline set of wheels into DIR"),
                            ("install", "install the wheels of DIR into --site")):
        mode = modes.add_parser(name, help=help_text)
        mode.add_argument("directory", metavar="DIR")
        if name == "install":
            mode.add_argument("--site", required=True)
    args = parser.parse_args(argv)

    try:
        if args.mode == "prepare":
            return prepare(args.directory)
        if args.mode == "install":
            return install(args.directory, args.site)
    except WheelError as error:
        print("gpu-check: %s" % error, file=sys.stderr)
        return 1
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    plan = plans.TINY if args.tiny else plans.FULL
    if args.budget is not None:
        if args.budget <= 0:
            parser.error("--budget must be a positive number of seconds")
        plan = dataclasses.replace(plan, budget=args.budget)
    if args.mode == "offline":
        from .offline import OfflineCheck
        return OfflineCheck(plan, args.out, args.python, args.site, args.allow_cpu,
                            args.processes).main()
    from .with_scipion import ScipionCheck
    return ScipionCheck(plan, args.out, args.allow_cpu, args.processes,
                        install_seconds=args.install_seconds).main()


if __name__ == "__main__":
    sys.exit(main())
