"""The ``scipion-reciprocal`` console command.

Each subcommand lives in its own module under ``scipion_reciprocal.commands`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (called with the parsed args;
its return value is the exit status).  Modules are imported lazily so that a subcommand's heavy
imports (Scipion, matplotlib) cost nothing to the others.
"""
import argparse
import importlib
import os
import sys

COMMAND_MODULES = (
    "scipion_reciprocal.commands.env",
    "scipion_reciprocal.commands.demo",
    "scipion_reciprocal.commands.install_backend",
    "scipion_reciprocal.commands.reciprocal",
    "scipion_reciprocal.commands.mapclust",
    "scipion_reciprocal.commands.hosts_conf",
)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="scipion-reciprocal",
        description="Which particles really belong together? Command-line tools of the "
                    "scipion-reciprocal Scipion plugin.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # subcommand not written yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv=None):
    """Run a subcommand; Ctrl-C anywhere ends it with one line and exit status 130
    (subcommands that write say what they left)."""
    command = "scipion-reciprocal"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        command += " " + args.command
        status = args.func(args)
    except KeyboardInterrupt:
        print("%s: interrupted" % command, file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``... | head``): the run itself finished; stay quiet.
        _silence_stdout()
        return 0
    return int(status or 0)


def _silence_stdout():
    """Point stdout at /dev/null so that Python's exit flush does not raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
