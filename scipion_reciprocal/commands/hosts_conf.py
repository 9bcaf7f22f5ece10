"""``scipion-reciprocal hosts-conf``: a Scipion hosts.conf for a SLURM cluster.

Prints (or writes with ``-o``) the documented example ``cluster/hosts.conf.slurm`` with your
partitions as Scipion queues.  ``-o scipion`` writes to the file Scipion reads: $SCIPION_HOSTS,
or the self-contained home's ``config/hosts.conf``.
"""
import sys
from pathlib import Path

from .. import scipion_setup
from ..cluster import slurm_hosts_conf, write_hosts_conf


def register(subparsers):
    parser = subparsers.add_parser(
        "hosts-conf", help="print or write a Scipion hosts.conf for SLURM",
        description=__doc__.splitlines()[0])
    parser.add_argument("--queue", action="append", metavar="PARTITION",
                        help="a SLURM partition offered as a Scipion queue (repeat for more); "
                             "default: the example's 'gpu' and 'cpu'")
    parser.add_argument("--memory", help="default memory of the queues (sbatch --mem), e.g. 32G")
    parser.add_argument("--time", help="default time limit of the queues, [D-]HH:MM:SS")
    parser.add_argument("-o", "--output", metavar="PATH",
                        help="file to write ('scipion': the hosts.conf Scipion reads); "
                             "default: print")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing file (kept as PATH.bak)")
    parser.set_defaults(func=run)


def run(args):
    queues = None
    if args.queue:
        values = {k: v for k, v in (("JOB_MEMORY", args.memory), ("JOB_TIME", args.time)) if v}
        queues = {name: dict(values) for name in args.queue}
    elif args.memory or args.time:
        print("hosts-conf: --memory and --time need --queue", file=sys.stderr)
        return 2
    try:
        if not args.output:
            sys.stdout.write(slurm_hosts_conf(queues))
            return 0
        target, force = args.output, args.force
        if target == "scipion":
            target = Path(scipion_setup.configure()["SCIPION_HOSTS"])
            # The one-line file a fresh self-contained home starts with holds nothing to keep.
            force = force or target.read_text() == scipion_setup.MINIMAL_HOSTS_CONF
        path = write_hosts_conf(target, queues, force=force)
    except (ValueError, FileExistsError) as exc:
        print("hosts-conf: %s" % exc, file=sys.stderr)
        return 1
    print("wrote %s" % path)
    return 0
