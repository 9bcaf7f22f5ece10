"""Large output files written around the page cache, with their CRC-32.

Writing through the page cache costs the kernel a fresh page of memory for every 4 kB: on
the 2-core benchmark machine (a virtual machine whose memory is faulted in on first touch)
about 2 s of CPU per GB, which made the gigabytes of subset STAR files the largest cost of the
reciprocal analysis; with ``O_DIRECT`` the same bytes cost about 0.05 s per GB
(``benchmarks/bench_reciprocal.py``). :class:`DirectFile` gathers what is written in an aligned
buffer; a file that outgrows the buffer is written with ``O_DIRECT`` where the file system
takes it (Linux local file systems; tmpfs, for one, does not: the file is then written as
usual), its last partial block through the page cache, while the caller fills a second
buffer. Smaller files are written at once, as usual. The CRC-32 of the bytes is computed as
they leave the buffer. ``SCIPION_RECIPROCAL_DIRECT_WRITES=0`` writes every file through the page
cache (for a file system on which direct writes are slow, such as some network mounts).
"""
import errno
import fcntl
import mmap
import os
import zlib
from concurrent.futures import ThreadPoolExecutor

__all__ = ['DirectFile', 'BUFFER_BYTES', 'DIRECT_WRITES_VAR']

#: Environment variable: 0 turns direct writes off.
DIRECT_WRITES_VAR = 'SCIPION_RECIPROCAL_DIRECT_WRITES'

#: Bytes gathered before a write (a multiple of the alignment).
BUFFER_BYTES = 1 << 23
_ALIGN = 4096
_O_DIRECT = getattr(os, 'O_DIRECT', 0)


class DirectFile:
    """A binary file open for writing (``write``, ``reserve``, ``close``): see the module.

    Two buffers take turns: while one is written (and checksummed) by a thread of the
    file's own, the caller fills the other.

    Parameters
    ----------
    path : path
        The file to create (or truncate).
    name : str, optional
        Its name in messages (default ``path``).
    buffers : list of two mmap.mmap, optional
        Page-aligned buffers of one size to use (reused ones spare fresh memory for every
        file); two of :data:`BUFFER_BYTES` are made otherwise.

    Attributes
    ----------
    crc32 : int
        CRC-32 of the bytes written (complete after :meth:`close`).
    size : int
        Bytes in the file (after :meth:`close`).
    went_direct : bool
        Whether some of it was written with ``O_DIRECT``.
    """

    def __init__(self, path, name=None, buffers=None):
        self.name = str(name or path)
        self.buffers = buffers or [mmap.mmap(-1, BUFFER_BYTES) for _ in range(2)]
        self._views = [memoryview(b) for b in self.buffers]
        self._view = self._views[0]             # the buffer being filled
        self._used = 0
        self._direct = False
        self._writer = self._pending = None     # thread and write in flight
        self.crc32 = self.size = 0
        self.went_direct = False
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(flush=exc_type is None)

    def write(self, data):
        """Write bytes (any C-contiguous buffer); returns their number."""
        data = memoryview(data).cast('B')
        pos = 0
        while pos < len(data):
            take = min(len(data) - pos, len(self._view) - self._used)
            self._view[self._used:self._used + take] = data[pos:pos + take]
            self._used += take
            pos += take
            if self._used == len(self._view):
                self._flush()
        return len(data)

    def reserve(self, nbytes):
        """The next ``nbytes`` of the file as a writable memoryview, for the caller to fill
        in place before its next call (no copy); at most the buffer's size less 4 kB."""
        if nbytes > len(self._view) - _ALIGN:
            raise ValueError(f'{self.name}: {nbytes} bytes reserved at once, at most '
                             f'{len(self._view) - _ALIGN}')
        if self._used + nbytes > len(self._view):
            self._flush()
        start = self._used
        self._used += nbytes
        return self._view[start:self._used]

    def close(self, flush=True):
        """Write what the buffer holds (unless ``flush`` is False) and close the file."""
        if self._fd is None:
            return
        try:
            if flush:
                if self._writer is not None:    # a large file: its whole blocks first
                    self._flush()
                self._wait()
                if self._used:                  # the rest, through the page cache
                    self._set_direct(False)
                    self._write(self._view[:self._used])
                    self._used = 0
        finally:
            try:
                if self._writer is not None:
                    self._writer.shutdown(wait=True, cancel_futures=True)
            finally:
                os.close(self._fd)
                self._fd = None
                for view in self._views:
                    view.release()

    def _flush(self):
        """Hand the buffer's whole blocks to the writing thread; the partial block goes to
        the start of the other buffer, which the caller fills next."""
        whole = self._used - self._used % _ALIGN
        if not whole:
            return
        if self._writer is None:
            self._set_direct(True)
            self._writer = ThreadPoolExecutor(1, thread_name_prefix='direct-write')
        full, self._view = self._view, self._views[self._views[0] is self._view]
        self._wait()                            # the other buffer is written: reuse it
        rest = self._used - whole
        self._view[:rest] = full[whole:self._used]
        self._used = rest
        self._pending = self._writer.submit(self._write, full[:whole])

    def _wait(self):
        """Wait for the write in flight (and raise what it raised)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _write(self, chunk):
        """Write and checksum a chunk (in the writing thread, or at the end)."""
        self.crc32 = zlib.crc32(chunk, self.crc32)
        done = 0
        while done < len(chunk):
            try:
                done += os.write(self._fd, chunk[done:])
                self.went_direct = self.went_direct or self._direct
            except OSError as exc:
                if exc.errno != errno.EINVAL or not self._direct:
                    raise
                self._set_direct(False)     # the file system refused direct writes
        self.size += len(chunk)

    def _set_direct(self, on):
        """Turn O_DIRECT on or off (on: only where the system and file system allow)."""
        if not _O_DIRECT or on == self._direct or (
                on and os.environ.get(DIRECT_WRITES_VAR, '').strip() == '0'):
            return
        flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
        try:
            fcntl.fcntl(self._fd, fcntl.F_SETFL, flags | _O_DIRECT if on else flags & ~_O_DIRECT)
        except OSError:
            return
        self._direct = on
