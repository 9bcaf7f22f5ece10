"""``scipion-reciprocal install-backend NAME``: create a backend environment without Scipion.

Runs exactly the command chain that ``python -m scipion installb NAME`` runs, into the same
folder (``$SCIPION_SOFTWARE/em/<name>-<version>/env``), so either way gives one environment.
"""
import shutil
import subprocess
import sys

from .. import scipion_setup
from ..environments import BACKENDS, conda_available, cuda_available, get_backend


def register(subparsers):
    parser = subparsers.add_parser(
        "install-backend", help="create a backend environment (recovar, classifier)",
        description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="backend(s) to install: %s; 'all' for every one"
                             % ", ".join(sorted(BACKENDS)))
    parser.add_argument("--list", action="store_true", help="list backends and their state")
    parser.add_argument("--force", action="store_true",
                        help="reinstall even when the environment is marked as installed")
    build = parser.add_mutually_exclusive_group()
    build.add_argument("--cuda", dest="cuda", action="store_true", default=None,
                       help="CUDA build (default: when nvidia-smi finds a GPU)")
    build.add_argument("--cpu", dest="cuda", action="store_false", help="CPU build")
    parser.add_argument("--venv", action="store_true",
                        help="use python -m venv even when conda is available")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.set_defaults(func=run)


def run(args):
    scipion_setup.configure()
    em_root = scipion_setup.em_root()
    if args.list or not args.names:
        for name, backend in sorted(BACKENDS.items()):
            state = "installed" if backend.marker(em_root).exists() else "not installed"
            print("%-12s %-14s %s  (%s)" % (name, state, backend.prefix(em_root), backend.description))
        return 0
    names = sorted(BACKENDS) if args.names == ["all"] else args.names
    try:
        backends = [get_backend(name) for name in names]
    except KeyError as error:
        print("scipion-reciprocal install-backend: %s" % error.args[0], file=sys.stderr)
        return 2
    use_cuda = cuda_available() if args.cuda is None else args.cuda
    use_conda = conda_available() and not args.venv
    for backend in backends:
        if backend.marker(em_root).exists() and not args.force:
            print("%s: already installed in %s" % (backend.name, backend.prefix(em_root)))
            continue
        command = backend.install_command(em_root, use_conda=use_conda, use_cuda=use_cuda)
        print("%s: installing %s build with %s into %s" % (
            backend.name, "CUDA" if use_cuda else "CPU", "conda" if use_conda else "venv",
            backend.prefix(em_root)), flush=True)
        if args.dry_run:
            print(command)
            continue
        if args.force:
            shutil.rmtree(backend.prefix(em_root), ignore_errors=True)
        backend.home(em_root).mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["bash", "-c", command])
        if result.returncode != 0 or not backend.marker(em_root).exists():
            print("%s: installation FAILED (exit status %d); see the messages above"
                  % (backend.name, result.returncode), file=sys.stderr)
            return 1
        print("%s: installed" % backend.name)
    return 0
