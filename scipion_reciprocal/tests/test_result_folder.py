"""Result folders: temporary names, journal, manifest, overwrite of an earlier run's files only."""
import json
import mmap
import os
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scipion_reciprocal.formats._atomic import final_path
from scipion_reciprocal.formats._direct import DIRECT_WRITES_VAR, DirectFile
from scipion_reciprocal.formats.result_folder import (JOURNAL, MANIFEST, ResultFolder,
                                                      ResultFolderError, as_result_folder,
                                                      check_output_folder, file_crc32,
                                                      folder_status)


def _write_run(folder, overwrite=False, fail_after=None):
    with ResultFolder(folder, overwrite=overwrite, producer='test') as out:
        out.write_csv('table.csv', pd.DataFrame({'a': [1, 2]}), index=False)
        out.write_text('sub/summary.txt', 'done\n')
        if fail_after == 'summary':
            raise RuntimeError('killed')
        out.write_json('verdict.json', {'states': 3})
    return out


def test_complete_folder_has_a_manifest_with_sizes_and_checksums(tmp_path):
    out = _write_run(tmp_path / 'r')
    manifest = json.loads((tmp_path / 'r' / MANIFEST).read_text())
    assert manifest['complete'] is True and manifest['producer'] == 'test'
    assert [e['path'] for e in manifest['files']] == ['sub/summary.txt', 'table.csv',
                                                      'verdict.json']
    entry = manifest['files'][1]
    assert entry['size'] == (tmp_path / 'r' / 'table.csv').stat().st_size == len('a\n1\n2\n')
    assert entry['crc32'] == file_crc32(tmp_path / 'r' / 'table.csv')
    assert not (tmp_path / 'r' / JOURNAL).exists()
    assert out.files == ['sub/summary.txt', 'table.csv', 'verdict.json']
    status = folder_status(tmp_path / 'r', verify=True)
    assert status.complete and status.reason == ''


def test_interrupted_run_is_incomplete_and_overwrite_removes_only_its_files(tmp_path):
    folder = tmp_path / 'r'
    with pytest.raises(RuntimeError):
        _write_run(folder, fail_after='summary')
    status = folder_status(folder)
    assert not status and 'interrupted' in status.reason
    assert (folder / 'table.csv').exists() and not (folder / MANIFEST).exists()
    (folder / 'mine.txt').write_text('user file')
    # a leftover temporary file of the killed run
    (folder / '.table.csv.0123456789ab.tmp').write_text('half')
    with pytest.raises(ResultFolderError, match='not empty'):
        _write_run(folder)
    _write_run(folder, overwrite=True)
    assert (folder / 'mine.txt').read_text() == 'user file'
    assert not (folder / '.table.csv.0123456789ab.tmp').exists()
    assert folder_status(folder).complete


def test_overwrite_removes_files_of_a_previous_complete_run(tmp_path):
    folder = tmp_path / 'r'
    with ResultFolder(folder) as out:
        out.write_text('per_class/old_class9.star', 'x')
    _write_run(folder, overwrite=True)
    assert not (folder / 'per_class').exists()
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST, 'sub', 'table.csv',
                                                        'verdict.json']


def test_missing_or_resized_file_makes_the_folder_incomplete(tmp_path):
    folder = tmp_path / 'r'
    _write_run(folder)
    (folder / 'table.csv').write_text('a\n1\n')
    assert 'table.csv has' in folder_status(folder).reason
    (folder / 'table.csv').unlink()
    assert 'table.csv is missing' in folder_status(folder).reason


def test_failed_write_leaves_no_file_under_the_final_name(tmp_path):
    folder = tmp_path / 'r'
    with pytest.raises(ZeroDivisionError):
        with ResultFolder(folder) as out:
            with out.writing('big.csv') as tmp:
                tmp.write_text('partial')
                1 / 0
    assert not (folder / 'big.csv').exists()
    assert [p.name for p in folder.iterdir()] == [JOURNAL]


def test_unusable_folders_are_refused(tmp_path):
    (tmp_path / 'file').write_text('x')
    with pytest.raises(ResultFolderError, match='is a file'):
        ResultFolder(tmp_path / 'file').open()
    if os.geteuid() != 0:       # root writes anywhere
        locked = tmp_path / 'locked'
        locked.mkdir()
        locked.chmod(0o500)
        with pytest.raises(ResultFolderError, match='not writable'):
            ResultFolder(locked).open()


def test_clean_empties_a_folder_the_caller_owns(tmp_path):
    folder = tmp_path / 'r'
    (folder / 'old').mkdir(parents=True)
    (folder / 'old' / 'x.star').write_text('x')
    with ResultFolder(folder, clean=True) as out:
        (folder / 'new.txt').write_text('written by a worker')
        out.add(folder / 'new.txt')
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST, 'new.txt']
    assert folder_status(folder).files == ['new.txt']


def test_folder_left_by_a_run_that_wrote_nothing_counts_as_empty(tmp_path):
    folder = tmp_path / 'r'
    with pytest.raises(RuntimeError):
        with ResultFolder(folder):
            raise RuntimeError('bad input found after the folder was opened')
    assert [p.name for p in folder.iterdir()] == [JOURNAL]
    _write_run(folder)                      # no overwrite needed
    assert folder_status(folder).complete


def test_overwrite_refuses_a_folder_that_no_run_listed(tmp_path):
    folder = tmp_path / 'r'
    folder.mkdir()
    (folder / 'summary.txt').write_text('written by an older tool')
    with pytest.raises(ResultFolderError, match='no manifest.json: not an earlier result'):
        _write_run(folder, overwrite=True)
    assert (folder / 'summary.txt').read_text() == 'written by an older tool'
    check_output_folder(tmp_path / 'new' / 'sub')           # a new folder: nothing created
    assert not (tmp_path / 'new').exists()


def test_overwrite_keeps_folders_it_did_not_empty(tmp_path):
    folder = tmp_path / 'r'
    _write_run(folder)
    (folder / 'notes').mkdir()              # the user's empty folder
    _write_run(folder, overwrite=True)
    assert (folder / 'notes').is_dir()


def test_resumed_folder_keeps_the_earlier_steps_files(tmp_path):
    folder = tmp_path / 'r'
    with ResultFolder(folder, clean=True, seal=False) as out:
        out.write_text('inputs.csv', 'a\n')
    status = folder_status(folder)
    assert not status and 'interrupted' in status.reason
    with ResultFolder(folder, resume=True) as out:
        out.write_text('plots/p.txt', 'b\n')
    assert folder_status(folder, verify=True).files == ['inputs.csv', 'plots/p.txt']
    # a later step run again (e.g. a new threshold): incomplete while it writes, then sealed
    with pytest.raises(RuntimeError):
        with ResultFolder(folder, resume=True) as out:
            raise RuntimeError('killed')
    assert not folder_status(folder)
    with ResultFolder(folder, resume=True) as out:
        out.write_text('plots/p.txt', 'c\n')
    assert folder_status(folder, verify=True).files == ['inputs.csv', 'plots/p.txt']


def test_not_enough_space_is_refused_before_writing(tmp_path):
    out = ResultFolder(tmp_path / 'r')
    out.require_space(1000, 'the tables')
    with pytest.raises(ResultFolderError, match=r'free on its disk, the subsets need about '
                                                r'1000000000.00 GB'):
        out.require_space(10 ** 18, 'the subsets')
    assert not (tmp_path / 'r').exists()


def test_unopened_folder_writes_atomically_without_a_manifest(tmp_path):
    out = as_result_folder(tmp_path / 'r')
    assert as_result_folder(out) is out
    out.write_text('a/b.txt', 'x')
    assert (tmp_path / 'r' / 'a' / 'b.txt').read_text() == 'x'
    assert sorted(p.name for p in (tmp_path / 'r').iterdir()) == ['a']


def test_final_path_of_temporary_names(tmp_path):
    assert final_path(tmp_path / '.x.csv.0123456789ab.tmp') == tmp_path / 'x.csv'
    assert final_path(tmp_path / '..x.csv.0123456789ab.tmp.ba9876543210.tmp') == tmp_path / 'x.csv'
    assert final_path(tmp_path / 'x.csv') == tmp_path / 'x.csv'


# ----------------------------------------------------------------------------- large files

def _small_buffers():
    """Two 16 kB buffers: files of a few blocks take DirectFile's O_DIRECT path."""
    return [mmap.mmap(-1, 16384) for _ in range(2)]


def _write_pieces(fh, data, seed):
    """Write ``data`` to ``fh`` in pieces of random sizes, half of them filled in place."""
    rng = np.random.default_rng(seed)
    pos = 0
    while pos < len(data):
        n = min(int(rng.integers(1, 9000)), len(data) - pos)
        if rng.random() < 0.5:
            np.frombuffer(fh.reserve(n), np.uint8)[:] = np.frombuffer(data, np.uint8, n, pos)
        else:
            fh.write(data[pos:pos + n])
        pos += n


@pytest.mark.parametrize('where', ['disk', 'tmpfs'])
def test_direct_file_writes_every_byte_and_its_crc32(tmp_path, where):
    folder = tmp_path if where == 'disk' else Path('/dev/shm')
    if not folder.is_dir():
        pytest.skip('no /dev/shm')
    path = folder / f'direct-{os.getpid()}.bin'
    rng = np.random.default_rng(3)
    buffers = _small_buffers()
    try:
        for size in (0, 1, 4095, 4096, 16383, 16384, 16385, 3 * 16384 + 4097, 200_001):
            data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
            with DirectFile(path, buffers=buffers) as fh:
                _write_pieces(fh, data, size)
            assert path.read_bytes() == data, size
            assert (fh.size, fh.crc32) == (size, zlib.crc32(data)), size
    finally:
        path.unlink(missing_ok=True)


def _takes_direct_writes(folder):
    """Whether the file system under ``folder`` accepts an aligned O_DIRECT write."""
    probe, buffer = folder / 'probe.bin', mmap.mmap(-1, 4096)
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT)
    except OSError:
        return False
    try:
        return os.write(fd, buffer) == 4096
    except OSError:
        return False
    finally:
        os.close(fd)
        probe.unlink()


@pytest.mark.parametrize('setting', ['', '0'])
def test_direct_writes_are_used_unless_turned_off(tmp_path, monkeypatch, setting):
    if not _takes_direct_writes(tmp_path):
        pytest.skip(f'{tmp_path} takes no O_DIRECT writes')
    monkeypatch.setenv(DIRECT_WRITES_VAR, setting)
    data = np.random.default_rng(8).integers(0, 256, 100_000, dtype=np.uint8).tobytes()
    with DirectFile(tmp_path / 'x.bin', buffers=_small_buffers()) as fh:
        _write_pieces(fh, data, 1)
    assert fh.went_direct is (setting == '')
    assert (tmp_path / 'x.bin').read_bytes() == data
    assert fh.crc32 == zlib.crc32(data)


def test_direct_file_refuses_a_reservation_larger_than_its_buffer(tmp_path):
    with DirectFile(tmp_path / 'x.bin', buffers=_small_buffers()) as fh:
        with pytest.raises(ValueError, match='at most 12288'):
            fh.reserve(12289)


def test_open_file_records_the_crc32_of_the_bytes_written(tmp_path):
    data = np.random.default_rng(5).integers(0, 256, 30_000_000, dtype=np.uint8).tobytes()
    with ResultFolder(tmp_path / 'r') as out:
        with out.open_file('per_class/a.star') as fh:
            fh.write(data[:1000])
            fh.write(np.frombuffer(data, np.uint8)[1000:])
        with out.open_file('b.star') as fh:
            fh.write(b'first version')
        out.write_text('b.star', 'second version')      # the later version's CRC-32 wins
        with pytest.raises(RuntimeError), out.open_file('c.star') as fh:
            fh.write(data)
            raise RuntimeError('interrupted')
    assert (tmp_path / 'r' / 'per_class' / 'a.star').read_bytes() == data
    assert not (tmp_path / 'r' / 'c.star').exists()
    assert not [p for p in (tmp_path / 'r').iterdir() if p.name.endswith('.tmp')]
    entries = {e['path']: e for e in json.loads((tmp_path / 'r' / MANIFEST).read_text())['files']}
    assert sorted(entries) == ['b.star', 'per_class/a.star']
    assert entries['per_class/a.star'] == {'path': 'per_class/a.star', 'size': len(data),
                                           'crc32': f'{zlib.crc32(data):08x}'}
    assert entries['b.star']['crc32'] == file_crc32(tmp_path / 'r' / 'b.star')
    assert folder_status(tmp_path / 'r', verify=True).complete


def test_atomic_folder_replaces_a_folder_only_when_complete(tmp_path):
    from scipion_reciprocal.formats._atomic import atomic_folder
    target = tmp_path / "inputs"
    target.mkdir()
    (target / "old.txt").write_text("old")
    stale = tmp_path / ".inputs.0123456789ab.tmp"     # left by a killed run
    stale.mkdir()
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            (tmp / "new.txt").write_text("half")
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs"]   # stale one removed too
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    with atomic_folder(target) as tmp:
        (tmp / "new.txt").write_text("new")
        assert not (target / "new.txt").exists()
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs"]
