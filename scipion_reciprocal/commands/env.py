"""``scipion-reciprocal env``: print the Scipion variables of a self-contained home.

``eval "$(scipion-reciprocal env)"`` lets plain ``python -m scipion ...`` commands use the
same home as ``scipion-reciprocal demo`` (pip-installed Scipion has no config of its own).
"""
import os
import shlex
import sys

from .. import scipion_setup


def register(subparsers):
    parser = subparsers.add_parser(
        "env", help="print 'export' lines for a self-contained Scipion home",
        description=__doc__.splitlines()[0])
    parser.add_argument("--home", help="Scipion home (default: $SCIPION_HOME, "
                                       "$SCIPION_RECIPROCAL_HOME or ~/.scipion-reciprocal)")
    parser.set_defaults(func=run)


def run(args):
    for key, value in scipion_setup.configure(home=args.home).items():
        print("export %s=%s" % (key, shlex.quote(value)))
    # `python -m scipion` launches its helpers with the `python` found on PATH.
    print('export PATH=%s:"$PATH"' % shlex.quote(os.path.dirname(sys.executable)))
    return 0
