"""One-line errors of the subcommands: bad input and full or read-only disks (exit status 2),
interruption by Ctrl-C (exit status 130)."""
import sys

from ..formats._atomic import final_path

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def fail(command, message):
    """Print ``scipion-reciprocal COMMAND: error: MESSAGE`` on one line; return status 2."""
    text = ' '.join(str(message).split())
    print(f'scipion-reciprocal {command}: error: {text}', file=sys.stderr)
    return EXIT_BAD_INPUT


def os_error_text(exc):
    """An OSError as ``file: reason``, naming the final file rather than its temporary name."""
    if exc.filename is None:
        return exc.strerror or str(exc)
    return f'{final_path(exc.filename)}: {exc.strerror or exc}'


def interrupted(command, outdir, started):
    """Report Ctrl-C on one line; return status 130."""
    where = (f'{outdir} is incomplete (rerun with --overwrite to replace it)' if started
             else 'nothing was written')
    print(f'scipion-reciprocal {command}: interrupted; {where}', file=sys.stderr)
    return EXIT_INTERRUPTED
