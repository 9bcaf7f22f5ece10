"""Write a file under a temporary name and rename it into place when complete."""

import os
import re
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; replace ``path`` with it on success.

    The temporary file lives in the same folder so ``os.replace`` is atomic. If
    the body raises, the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f'.{path.name}.{uuid.uuid4().hex[:12]}.tmp')
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_folder(path):
    """Yield a temporary folder next to ``path``; on success it replaces ``path``.

    A folder is never seen half-written under its final name: an earlier ``path`` is
    removed only once the new one is complete. If the body raises, the temporary folder is
    removed and ``path`` is left as it was; temporary folders a killed run left are removed
    first.
    """
    path = Path(path)
    if path.parent.is_dir():
        for stale in path.parent.glob(f'.{path.name}.*.tmp'):
            if is_temporary(stale) and stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
    tmp = path.with_name(f'.{path.name}.{uuid.uuid4().hex[:12]}.tmp')
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


_TEMPORARY = re.compile(r'^\..+\.[0-9a-f]{12}\.tmp$')


def is_temporary(path):
    """True for a name :func:`atomic_path` gives its temporary files."""
    return bool(_TEMPORARY.match(Path(path).name))


def final_path(path):
    """The file a temporary file of :func:`atomic_path` stands for (``path`` itself when it
    is not one)."""
    path = Path(path)
    while is_temporary(path):
        path = path.with_name(path.name[1:-len('.0123456789ab.tmp')])
    return path
