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
        with out.open_file('per_class/job085_class2.star') as fh:
            fh.write(header)          # CRC-32 computed from the bytes as they pass
        out.add('plots/heatmap.png')      # written atomically by someone else (a worker)
    # leaving the block without an exception writes the manifest

A protocol whose steps write one folder opens it with ``clean=True, seal=False`` in its first
step and with ``resume=True`` in the later ones (the last one seals it). Files written through
:meth:`ResultFolder.open_file` get their CRC-32 from the bytes written (large files are not
read again); the others' are computed in a background thread as they are recorded, so they
overlap the rest of the writing.

:func:`folder_status` tells viewers and the command line whether a folder is complete.
"""
import errno
import json
import os
import shutil
import threading
import time
import zlib
import queue
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ._atomic import atomic_path, is_temporary
from ._direct import DirectFile
from .errors import FormatError

__all__ = ['MANIFEST', 'JOURNAL', 'ResultFolder', 'ResultFolderError', 'FolderStatus',
           'folder_status', 'file_crc32', 'as_result_folder', 'check_output_folder']

MANIFEST = 'manifest.json'
JOURNAL = '.manifest.journal'


def journal_line(root, rel):
    """Add ``rel`` to the journal of the result folder ``root`` from another process (a
    worker writing into the folder), before the file is renamed into place; nothing when the
    folder has no journal (not being written as a result folder)."""
    try:
        fd = os.open(Path(root) / JOURNAL, os.O_WRONLY | os.O_APPEND)
    except FileNotFoundError:
        return
    try:
        os.write(fd, (rel + '\n').encode())
    finally:
        os.close(fd)
MANIFEST_VERSION = 1
#: Errors of a write that mean the folder (its disk or its permissions) is the problem.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


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


def check_output_folder(path, overwrite=False, reuse=True):
    """Raise :class:`ResultFolderError` unless ``path`` can take a new result; create nothing.

    The folder (or, when it does not exist yet, its nearest existing parent) must be a
    writable folder (tried by creating a file); a folder holding files must be an earlier
    result (with a manifest or a journal) and ``overwrite`` must be given (not checked when
    ``reuse`` is False: the caller empties or resumes the folder).
    """
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise ResultFolderError(root, 'is a file, not a folder')
    existing = root
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise ResultFolderError(root, f'cannot be created: {existing} is a file')
    _probe_writable(existing, root)
    if root.exists() and reuse:
        _check_reusable(root, overwrite)


def _probe_writable(folder, root):
    probe = folder / f'.write-test.{os.urandom(6).hex()}.tmp'
    try:
        probe.open('x').close()
    except OSError as exc:
        where = '' if folder == root else f' ({folder} is not writable)'
        raise ResultFolderError(root, f'is not writable{where}: {exc.strerror}') from None
    probe.unlink()


def _check_reusable(root, overwrite):
    """Refuse a folder holding files unless it is an earlier result and ``overwrite``."""
    files = _content(root)
    if not files:
        return
    example = files[0].relative_to(root)
    if not overwrite:
        raise ResultFolderError(root, f'is not empty ({len(files)} files, e.g. {example}); '
                                      f'choose another folder or overwrite it (--overwrite)')
    if not (root / MANIFEST).exists() and not (root / JOURNAL).exists():
        raise ResultFolderError(root, f'holds {len(files)} files (e.g. {example}) but no '
                                      f'{MANIFEST}: not an earlier result of this program, so '
                                      f'nothing is overwritten; choose another folder')


def _content(root):
    """Files in ``root`` other than the manifest, the journal and temporary files."""
    own = {root / MANIFEST, root / JOURNAL}
    return sorted(p for p in root.rglob('*') if (p.is_file() or p.is_symlink())
                  and p not in own and not is_temporary(p))


class ResultFolder:
    """An output folder written file by file and sealed by a manifest.

    Parameters
    ----------
    path : path
        The folder (created with its parents).
    overwrite : bool
        A folder that already holds files is refused unless True; then the files that its
        manifest or journal lists (an earlier run's own files) are removed first, never
        anything else. A folder with files but neither manifest nor journal is refused.
    producer : str, optional
        Written into the manifest (e.g. ``'scipion-reciprocal reciprocal'``).
    clean : bool
        Remove everything in the folder first (for a folder the caller owns outright, such
        as a protocol's ``extra/results``). Implies ``overwrite``.
    resume : bool
        Go on with a folder an earlier step of the same run started (its journal's or
        manifest's files are kept and stay recorded; a manifest is removed until this
        step seals the folder again).
    seal : bool
        Write the manifest when the ``with`` block ends without an exception (False for a
        step that a later step completes).

    A ResultFolder that is never opened writes files atomically and records nothing on disk
    (see :func:`as_result_folder`).
    """

    def __init__(self, path, overwrite=False, producer=None, clean=False, resume=False,
                 seal=True):
        self.root = Path(path)
        self.overwrite = overwrite or clean
        self.clean = clean
        self.resume = resume
        self.seal = seal
        self.producer = producer
        self._files = {}
        self._lock = threading.Lock()
        self._journal = None
        self._checksums = None      # (file, CRC-32 or None) waiting (a SimpleQueue)
        self._crc32 = {}            # relative path -> CRC-32, from the checksum thread
        self._checksummer = None
        self._started = None
        self._buffers = []          # of open_file, for reuse

    # -------------------------------------------------------------- life cycle
    def __enter__(self):
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None and self.seal:
            self.finish()
        else:
            self.close()
        return False

    def open(self):
        """Check the folder, remove an earlier run's files when allowed, start the journal."""
        root = self.root
        check_output_folder(root, self.overwrite, reuse=not (self.clean or self.resume))
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ResultFolderError(root, f'cannot be created ({exc.strerror})') from None
        if self.clean:
            _empty_folder(root)
        _remove_temporaries(root)
        if self.resume:
            for rel in sorted(_listed_files(root)):
                if (root / rel).is_file():
                    self._files[rel] = None
            (root / MANIFEST).unlink(missing_ok=True)
        elif _content(root):
            _remove_listed(root)
        try:
            # Append mode: lines another process adds (journal_line) are never overwritten.
            self._journal = open(root / JOURNAL, 'a', encoding='utf-8')
            self._journal.truncate(0)
            self._journal.writelines(rel + '\n' for rel in self._files)
            self._journal.flush()
        except OSError as exc:
            raise ResultFolderError(root, f'is not writable ({exc.strerror})') from None
        # A plain thread and a SimpleQueue (no Python-level locks in the writing thread):
        # Ctrl-C may land anywhere in add() without leaving a lock held.
        self._checksums = queue.SimpleQueue()
        self._checksummer = threading.Thread(target=self._checksum_files, name='crc32',
                                             args=(self._checksums,), daemon=True)
        self._checksummer.start()
        for rel in self._files:
            self._checksums.put((rel, None))
        self._started = time.strftime('%Y-%m-%dT%H:%M:%S')
        return self

    def finish(self, **extra):
        """Write the manifest (every recorded file, its size and CRC-32) and drop the journal.

        Parameters
        ----------
        **extra
            JSON-serialisable values added to the manifest (e.g. ``verdict=...``).
        """
        if self._checksums is not None:
            self._checksums.put(None)
            self._checksummer.join()
        with self._lock:
            files = sorted(self._files)
        entries = []
        for rel in files:
            path = self.root / rel
            try:
                crc = self._crc32.get(rel) or file_crc32(path)
                size = path.stat().st_size
            except OSError as exc:
                raise ResultFolderError(path, f'recorded but not readable ({exc.strerror})') \
                    from None
            entries.append({'path': rel, 'size': size, 'crc32': crc})
        manifest = {'manifest_version': MANIFEST_VERSION, 'complete': True,
                    'producer': self.producer, 'started': self._started,
                    'finished': time.strftime('%Y-%m-%dT%H:%M:%S'), 'files': entries, **extra}
        text = json.dumps(manifest, indent=1, default=_jsonable) + '\n'
        with self._writes_to(self.root / MANIFEST), atomic_path(self.root / MANIFEST) as tmp:
            tmp.write_text(text, encoding='utf-8')
        self.close()
        (self.root / JOURNAL).unlink(missing_ok=True)
        return self.root / MANIFEST

    def close(self):
        """Stop recording without writing the manifest (the folder stays incomplete)."""
        if self._checksums is not None:
            self._checksums.put(None)          # the thread ends after its current file
            self._checksums = None
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    _close_journal = close

    def _checksum_files(self, files):
        """Thread: CRC-32 of each recorded file, as they come (None ends it); a CRC-32 its
        writer computed is taken as it is (in order, so a later version of a file wins)."""
        while True:
            item = files.get()
            if item is None:
                return
            rel, crc = item
            try:
                self._crc32[rel] = crc or file_crc32(self.root / rel)
            except OSError:
                pass                # finish() tries again and says what is wrong

    def require_space(self, nbytes, what='the results'):
        """Raise :class:`ResultFolderError` when the folder's disk has less than ``nbytes``
        free (``what`` names what needs the space, e.g. 'the subset STAR files')."""
        existing = self.root
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent
        free = shutil.disk_usage(existing).free
        if nbytes > free:
            raise ResultFolderError(self.root, f'{_size(free)} free on its disk, {what} need '
                                               f'about {_size(nbytes)}')

    # -------------------------------------------------------------- writing
    def path(self, relpath):
        """The final path of ``relpath`` in the folder."""
        return self.root / relpath

    @contextmanager
    def writing(self, relpath):
        """Yield a temporary path; on success rename it to ``relpath`` and record it.

        The journal names the file before the rename, so a run killed in between leaves no
        file that an ``overwrite`` would not know as its own. A write that fails for want of
        space or permission raises :class:`ResultFolderError` naming the final file."""
        final = self.root / relpath
        rel = self._relative(final)
        with self._writes_to(final):
            final.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(final) as tmp:
                yield tmp
                self._journal_line(rel)
        self._record(rel, journal=False)

    @contextmanager
    def open_file(self, relpath):
        """Yield a binary file open for writing ``relpath`` (under a temporary name, renamed
        and recorded as :meth:`writing` does): a :class:`~._direct.DirectFile`, which writes
        a large file around the page cache and computes its CRC-32 from the bytes written, so
        the manifest does not read it again. For large files written in blocks."""
        final = self.root / relpath
        rel = self._relative(final)
        with self._lock:
            buffers = self._buffers.pop() if self._buffers else None
        try:
            with self._writes_to(final):
                final.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(final) as tmp:
                    with DirectFile(tmp, name=final, buffers=buffers) as fh:
                        buffers = fh.buffers
                        yield fh
                    self._journal_line(rel)
        finally:
            if buffers is not None:
                with self._lock:
                    self._buffers.append(buffers)     # reused: no fresh memory per file
        self._record(rel, journal=False, crc32=f'{fh.crc32:08x}')

    @staticmethod
    @contextmanager
    def _writes_to(final):
        try:
            yield
        except OSError as exc:
            if exc.errno not in _WRITE_ERRNOS:
                raise
            raise ResultFolderError(final, f'cannot be written ({exc.strerror}); the result '
                                           f'is incomplete') from None

    def add(self, path):
        """Record a file already in place (written atomically by another writer).

        ``path`` is inside the folder: absolute, as returned by :meth:`path`, or relative
        to the folder. Call :meth:`expect` before another process writes it, so that a run
        killed before this call still lists the file as its own."""
        return self._record(self._relative(path))

    def expect(self, path):
        """Journal a file another writer (e.g. a worker process) is about to put in place."""
        self._journal_line(self._relative(path))

    def _relative(self, path):
        full = Path(path)
        if not full.is_absolute() and not (self.root / full).exists():
            full = Path(os.path.abspath(full))
        if not full.is_absolute():
            full = self.root / full
        rel = Path(os.path.relpath(os.path.abspath(full), os.path.abspath(self.root))).as_posix()
        if rel.startswith('..'):
            raise ValueError(f'{path} is not inside {self.root}')
        return rel

    def _journal_line(self, rel):
        with self._lock:
            if self._journal is not None:
                with self._writes_to(self.root / JOURNAL):
                    self._journal.write(rel + '\n')
                    self._journal.flush()

    def _record(self, rel, journal=True, crc32=None):
        if journal:
            self._journal_line(rel)
        with self._lock:
            self._files[rel] = None
            self._crc32.pop(rel, None)
            if self._checksums is not None:
                self._checksums.put((rel, crc32))
            elif crc32 is not None:
                self._crc32[rel] = crc32
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


def as_result_folder(out):
    """``out`` itself when it is a :class:`ResultFolder`, else an unopened one on the path
    ``out`` (files written atomically, nothing recorded on disk): lets a writer take either."""
    return out if isinstance(out, ResultFolder) else ResultFolder(out)


def _size(nbytes):
    return f'{nbytes / 1e9:.2f} GB' if nbytes >= 1e9 else f'{nbytes / 1e6:.1f} MB'


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
    """Remove an earlier run's files (those its manifest or journal lists), then the folders
    they leave empty."""
    resolved_root = root.resolve()
    folders = set()
    for rel in _listed_files(root):
        path = (root / rel)
        try:
            path.resolve().relative_to(resolved_root)
        except ValueError:          # a listed path outside the folder: never touched
            continue
        path.unlink(missing_ok=True)
        folders.update(p for p in path.parents if p != root and root in p.parents)
    (root / MANIFEST).unlink(missing_ok=True)
    (root / JOURNAL).unlink(missing_ok=True)
    for folder in sorted(folders, key=lambda p: -len(p.parts)):
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
        why = ('the run was interrupted or failed' if (root / JOURNAL).exists()
               else 'the run did not finish')
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
