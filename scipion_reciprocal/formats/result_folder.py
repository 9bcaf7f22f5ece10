"""Result folders that are complete only when their manifest says so.

Every file is written under a temporary name and renamed into place (:func:`atomic_path`).
While a run writes, each finished file is appended to a journal (``.manifest.journal``); the
manifest (``manifest.json``: every file with its size and CRC-32) is written last, and only a
folder with a manifest whose files are all present is complete. A killed run leaves its journal,
so a rerun with ``overwrite`` knows which files were its own and removes exactly those::

    with ResultFolder(outdir, overwrite=args.overwrite, producer='reciprocal') as out:
        out.write_csv('agreement.csv', table, index=False)
        with out.writing('per_class/job085_class1.star') as tmp:
            write_star(tmp, ...)
        out.add('plots/heatmap.png')      # written atomically by someone else (a worker)
    # leaving the block without an exception writes the manifest

:func:`folder_status` tells viewers and the command line whether a folder is complete.
"""
import json
import os
import shutil
import threading
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ._atomic import atomic_path, is_temporary
from .errors import FormatError

__all__ = ['MANIFEST', 'JOURNAL', 'ResultFolder', 'ResultFolderError', 'FolderStatus',
           'folder_status', 'file_crc32']

MANIFEST = 'manifest.json'
JOURNAL = '.manifest.journal'
MANIFEST_VERSION = 1


class ResultFolderError(FormatError):
    """An output folder that cannot be used (not empty, not writable, not a folder)."""


def file_crc32(path, chunk=1 << 22):
    """CRC-32 of a file's bytes, as 8 hex digits."""
    crc = 0
    with open(path, 'rb') as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            crc = zlib.crc32(block, crc)
    return f'{crc:08x}'


class ResultFolder:
    """An output folder written file by file and sealed by a manifest.

    Parameters
    ----------
    path : path
        The folder (created with its parents).
    overwrite : bool
        A folder that already holds files is refused unless True; then the files that its
        manifest or journal lists (an earlier run's own files) are removed first, never
        anything else.
    producer : str, optional
        Written into the manifest (e.g. ``'scipion-reciprocal reciprocal'``).
    clean : bool
        Remove everything in the folder first (for a folder the caller owns outright, such
        as a protocol's ``extra/results``). Implies ``overwrite``.
    """

    def __init__(self, path, overwrite=False, producer=None, clean=False):
        self.root = Path(path)
        self.overwrite = overwrite or clean
        self.clean = clean
        self.producer = producer
        self._files = {}
        self._lock = threading.Lock()
        self._journal = None
        self._started = None

    # -------------------------------------------------------------- life cycle
    def __enter__(self):
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.finish()
        else:
            self._close_journal()
        return False

    def open(self):
        """Check the folder, remove an earlier run's files when allowed, start the journal."""
        root = self.root
        if root.exists() and not root.is_dir():
            raise ResultFolderError(root, 'is a file, not a folder')
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ResultFolderError(root, f'cannot be created ({exc.strerror})') from None
        if not os.access(root, os.W_OK | os.X_OK):
            raise ResultFolderError(root, 'is not writable')
        if self.clean:
            _empty_folder(root)
        _remove_temporaries(root)
        existing = [p for p in root.rglob('*') if p.is_file() or p.is_symlink()]
        if existing:
            if not self.overwrite:
                raise ResultFolderError(root, f'is not empty ({len(existing)} files, e.g. '
                                              f'{existing[0].relative_to(root)}); choose '
                                              f'another folder or overwrite it')
            _remove_listed(root)
        try:
            self._journal = open(root / JOURNAL, 'a', encoding='utf-8')
        except OSError as exc:
            raise ResultFolderError(root, f'is not writable ({exc.strerror})') from None
        self._started = time.strftime('%Y-%m-%dT%H:%M:%S')
        return self

    def finish(self, **extra):
        """Write the manifest (every recorded file, its size and CRC-32) and drop the journal.

        Parameters
        ----------
        **extra
            JSON-serialisable values added to the manifest (e.g. ``verdict=...``).
        """
        with self._lock:
            files = sorted(self._files)
        entries = []
        for rel in files:
            path = self.root / rel
            entries.append({'path': rel, 'size': path.stat().st_size,
                            'crc32': file_crc32(path)})
        manifest = {'manifest_version': MANIFEST_VERSION, 'complete': True,
                    'producer': self.producer, 'started': self._started,
                    'finished': time.strftime('%Y-%m-%dT%H:%M:%S'), 'files': entries, **extra}
        with atomic_path(self.root / MANIFEST) as tmp:
            tmp.write_text(json.dumps(manifest, indent=1) + '\n', encoding='utf-8')
        self._close_journal()
        (self.root / JOURNAL).unlink(missing_ok=True)
        return self.root / MANIFEST

    def _close_journal(self):
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    # -------------------------------------------------------------- writing
    def path(self, relpath):
        """The final path of ``relpath`` in the folder."""
        return self.root / relpath

    @contextmanager
    def writing(self, relpath):
        """Yield a temporary path; on success rename it to ``relpath`` and record it."""
        final = self.root / relpath
        final.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(final) as tmp:
            yield tmp
        self.add(final)

    def add(self, path):
        """Record a file already in place (written atomically by another writer).

        ``path`` is inside the folder: absolute, as returned by :meth:`path`, or relative
        to the folder."""
        full = Path(path)
        if not full.is_absolute() and not (self.root / full).exists():
            full = Path(os.path.abspath(full))
        if not full.is_absolute():
            full = self.root / full
        rel = Path(os.path.relpath(os.path.abspath(full), os.path.abspath(self.root))).as_posix()
        if rel.startswith('..'):
            raise ValueError(f'{path} is not inside {self.root}')
        with self._lock:
            self._files[rel] = True
            if self._journal is not None:
                self._journal.write(rel + '\n')
                self._journal.flush()
        return self.root / rel

    def write_text(self, relpath, text):
        with self.writing(relpath) as tmp:
            tmp.write_text(text, encoding='utf-8')
        return self.root / relpath

    def write_bytes(self, relpath, data):
        with self.writing(relpath) as tmp:
            tmp.write_bytes(data)
        return self.root / relpath

    def write_json(self, relpath, obj):
        return self.write_text(relpath, json.dumps(obj, indent=1, default=_jsonable) + '\n')

    def write_csv(self, relpath, frame, **to_csv):
        """``frame.to_csv`` under a temporary name (keyword arguments go to pandas)."""
        with self.writing(relpath) as tmp:
            frame.to_csv(tmp, **to_csv)
        return self.root / relpath

    def save_figure(self, relpath, figure, **savefig):
        """``figure.savefig`` under a temporary name; the format comes from ``relpath``."""
        savefig.setdefault('format', Path(relpath).suffix.lstrip('.') or 'png')
        with self.writing(relpath) as tmp:
            figure.savefig(tmp, **savefig)
        return self.root / relpath

    @property
    def files(self):
        """Relative paths recorded so far, sorted."""
        with self._lock:
            return sorted(self._files)


def _jsonable(value):
    if hasattr(value, 'item'):
        return value.item()
    if hasattr(value, 'tolist'):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f'{type(value).__name__} is not JSON serialisable')


def _empty_folder(root):
    for child in root.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _remove_temporaries(root):
    for path in root.rglob('.*.tmp'):
        if is_temporary(path) and path.is_file():
            path.unlink()


def _listed_files(root):
    """Relative paths an earlier run recorded (manifest and journal)."""
    listed = set()
    manifest = root / MANIFEST
    if manifest.exists():
        try:
            listed.update(e['path'] for e in json.loads(manifest.read_text())['files'])
        except (ValueError, KeyError, TypeError):
            pass
    journal = root / JOURNAL
    if journal.exists():
        listed.update(line.strip() for line in journal.read_text().splitlines() if line.strip())
    return listed


def _remove_listed(root):
    """Remove an earlier run's files (those its manifest or journal lists) and empty folders."""
    resolved_root = root.resolve()
    for rel in _listed_files(root):
        path = (root / rel)
        try:
            path.resolve().relative_to(resolved_root)
        except ValueError:          # a listed path outside the folder: never touched
            continue
        path.unlink(missing_ok=True)
    (root / MANIFEST).unlink(missing_ok=True)
    (root / JOURNAL).unlink(missing_ok=True)
    for folder in sorted((p for p in root.rglob('*') if p.is_dir()), key=lambda p: -len(p.parts)):
        try:
            folder.rmdir()
        except OSError:
            pass


@dataclass
class FolderStatus:
    """Whether a result folder is complete (:func:`folder_status`)."""

    complete: bool
    reason: str
    files: list = field(default_factory=list)
    manifest: dict = field(default_factory=dict)

    def __bool__(self):
        return self.complete


def folder_status(path, verify=False):
    """Is ``path`` a complete result folder?

    Complete means: ``manifest.json`` is there, readable, and every file it lists exists with
    its recorded size (and CRC-32 when ``verify``).

    Returns
    -------
    FolderStatus
        ``reason`` says in one line why the folder is incomplete ('' when complete).
    """
    root = Path(path)
    if not root.is_dir():
        return FolderStatus(False, f'{root}: no such folder')
    manifest_path = root / MANIFEST
    if not manifest_path.exists():
        why = 'the run was interrupted' if (root / JOURNAL).exists() else 'the run did not finish'
        return FolderStatus(False, f'{root}: incomplete, no {MANIFEST} ({why})')
    try:
        manifest = json.loads(manifest_path.read_text(encoding='utf-8'))
        entries = manifest['files']
    except (ValueError, KeyError, TypeError, OSError) as exc:
        return FolderStatus(False, f'{manifest_path}: unreadable manifest ({exc})')
    for entry in entries:
        file = root / entry['path']
        if not file.exists():
            return FolderStatus(False, f'{root}: incomplete, {entry["path"]} is missing',
                                manifest=manifest)
        if file.stat().st_size != entry['size']:
            return FolderStatus(False, f'{root}: incomplete, {entry["path"]} has '
                                       f'{file.stat().st_size} bytes, the manifest '
                                       f'{entry["size"]}', manifest=manifest)
        if verify and file_crc32(file) != entry['crc32']:
            return FolderStatus(False, f'{root}: {entry["path"]} differs from the manifest '
                                       f'(CRC-32)', manifest=manifest)
    return FolderStatus(True, '', [e['path'] for e in entries], manifest)
