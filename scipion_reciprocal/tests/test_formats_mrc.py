"""MRC maps and stacks: exact round trips, selective reads, corrupt headers."""
import struct

import mrcfile
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from scipion_reciprocal.formats.errors import FormatError, MrcError
from scipion_reciprocal.formats.mrc import (
    open_stack, read_images, read_map, validate_mrc, write_map, write_stack)

# Byte offsets of header fields (MRC2014).
NZ, MODE, MX, CELLA_X, MAPC, NSYMBT, MAP_ID, MACHST = 8, 12, 28, 40, 64, 92, 208, 212


@pytest.fixture
def volume():
    return np.random.default_rng(7).normal(size=(6, 8, 10)).astype(np.float32)


@pytest.fixture
def stack():
    # image k is filled with k, plus a ramp so rows and columns differ
    ramp = np.arange(12 * 9, dtype=np.float32).reshape(12, 9) / 1000
    return np.stack([np.full((12, 9), k, np.float32) + ramp for k in range(1, 8)])


def patch(path, offset, fmt, *values):
    with open(path, 'r+b') as fh:
        fh.seek(offset)
        fh.write(struct.pack(fmt, *values))


# ------------------------------------------------------------------ maps

def test_map_round_trip(tmp_path, volume):
    path = tmp_path / 'map.mrc'
    write_map(path, volume, 1.35)
    data, voxel = read_map(path)
    assert data.dtype == np.float32 and data.shape == (6, 8, 10)
    assert np.array_equal(data, volume)
    assert voxel == pytest.approx(1.35, rel=1e-6)
    with mrcfile.open(path) as mrc:
        assert int(mrc.header.mode) == 2 and int(mrc.header.ispg) == 1
        assert (int(mrc.header.nx), int(mrc.header.ny), int(mrc.header.nz)) == (10, 8, 6)
        assert tuple(mrc.header.origin.item()) == (0.0, 0.0, 0.0)
        assert mrc.voxel_size.x == pytest.approx(1.35, rel=1e-6)


def test_map_of_other_mode_reads_as_float32(tmp_path):
    path = tmp_path / 'int16.mrc'
    ints = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4) - 10
    with mrcfile.new(path) as mrc:
        mrc.set_data(ints)
        mrc.voxel_size = 2.0
    data, voxel = read_map(path)
    assert data.dtype == np.float32 and np.array_equal(data, ints.astype(np.float32))
    assert voxel == 2.0
    assert validate_mrc(path)['mode'] == 1


def test_big_endian_map(tmp_path, volume):
    path = tmp_path / 'big.mrc'
    with mrcfile.new(path) as mrc:
        mrc.set_data(volume.astype('>f4'))
        mrc.voxel_size = 3.0
    summary = validate_mrc(path)
    assert summary['byte_order'] == '>' and summary['shape'] == (6, 8, 10)
    data, voxel = read_map(path)
    assert np.array_equal(data, volume) and voxel == 3.0


def test_wrong_machine_stamp_is_tolerated(tmp_path, volume):
    path = tmp_path / 'stamp.mrc'
    write_map(path, volume, 1.0)
    patch(path, MACHST, '4B', 0x11, 0x11, 0, 0)  # says big-endian; the data are little-endian
    data, _ = read_map(path)
    assert np.array_equal(data, volume)


def test_write_map_replaces_atomically(tmp_path, volume):
    path = tmp_path / 'map.mrc'
    write_map(path, volume, 1.0)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r'map\.mrc: voxel size must be a positive number'):
        write_map(path, volume * 2, float('nan'))
    with pytest.raises(ValueError, match=r'map\.mrc: map must be a non-empty 2D or 3D array'):
        write_map(path, np.zeros((2, 2, 2, 2)), 1.0)
    assert path.read_bytes() == before
    write_map(path, volume * 2, 1.0)
    assert np.array_equal(read_map(path)[0], volume * 2)
    assert [p.name for p in tmp_path.iterdir()] == ['map.mrc']


# ------------------------------------------------------------------ stacks

def test_stack_header_and_selected_images(tmp_path, stack):
    path = tmp_path / 'particles.mrcs'
    write_stack(path, stack, 2.5)
    summary = validate_mrc(path)
    assert summary['shape'] == (7, 12, 9) and summary['ispg'] == 0
    assert summary['mode'] == 2 and summary['voxel_size'] == 2.5
    images = read_images(path, [5, 1, 5, 7])
    assert images.dtype == np.float32 and images.shape == (4, 12, 9)
    assert np.array_equal(images, stack[[4, 0, 4, 6]])
    assert images[:, 0, 0].tolist() == [5.0, 1.0, 5.0, 7.0]
    assert read_images(path, []).shape == (0, 12, 9)


def test_open_stack_is_lazy_and_three_dimensional(tmp_path, stack):
    path = tmp_path / 'particles.mrcs'
    write_stack(path, stack, 1.0)
    with open_stack(path) as images:
        assert isinstance(images, np.memmap)
        assert images.shape == (7, 12, 9)
        assert np.array_equal(np.asarray(images[2]), stack[2])


def test_single_image_is_a_stack_of_one(tmp_path, stack):
    path = tmp_path / 'one.mrcs'
    write_stack(path, stack[3], 1.0)
    with open_stack(path) as images:
        assert images.shape == (1, 12, 9)
    assert np.array_equal(read_images(path, [1])[0], stack[3])
    assert read_map(path)[0].shape == (1, 12, 9)


def test_image_index_out_of_range(tmp_path, stack):
    path = tmp_path / 'particles.mrcs'
    write_stack(path, stack, 1.0)
    with pytest.raises(MrcError) as err:
        read_images(path, [1, 8])
    assert str(err.value) == f'{path}: image 8 requested but the stack holds images 1..7'
    with pytest.raises(MrcError, match='image 0 requested'):
        read_images(path, [0])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 7), max_size=25))
def test_read_images_property(tmp_path_factory, indices):
    stack = np.arange(7 * 3 * 2, dtype=np.float32).reshape(7, 3, 2)
    path = tmp_path_factory.mktemp('stack') / 's.mrcs'
    write_stack(path, stack, 1.0)
    got = read_images(path, indices)
    assert got.shape == (len(indices), 3, 2)
    assert np.array_equal(got, stack[np.asarray(indices, dtype=int) - 1])


# ------------------------------------------------------------------ corrupt files

def corrupt(tmp_path, offset, fmt, *values, name='bad.mrc'):
    path = tmp_path / name
    write_map(path, np.ones((4, 5, 6), np.float32), 1.5)
    patch(path, offset, fmt, *values)
    return path


@pytest.mark.parametrize('offset, fmt, value, reason', [
    (MAP_ID, '4s', b'XXXX', "map ID is b'XXXX', not b'MAP ' (not an MRC file, or the header "
                            "is corrupt)"),
    (MODE, '<i', 3, 'unsupported mode 3 (supported: 0, 1, 2, 4, 6, 12)'),
    (MODE, '<i', 99, 'unsupported mode 99 (supported: 0, 1, 2, 4, 6, 12)'),
    (NZ, '<i', 0, 'header field nz is 0, must be > 0'),
    (0, '<i', -4, 'header field nx is -4, must be > 0'),
    (MX, '<i', 0, 'header field mx is 0, must be > 0'),
    (NZ, '<i', 5, 'file is shorter than the header says: 5 x 5 x 6 mode 2 needs 600 data bytes '
                  'after byte 1024, found 480'),
    (NSYMBT, '<i', 100, 'file is shorter than the header says: 4 x 5 x 6 mode 2 needs 480 data '
                        'bytes after byte 1124, found 380'),
    (NSYMBT, '<i', -8, 'header field nsymbt (extended header size) is -8'),
    (CELLA_X, '<f', float('nan'), 'voxel size along x (cella.x / mx) is nan'),
    (CELLA_X, '<f', -6.0, 'voxel size along x (cella.x / mx) is -1.0'),
    (MAPC, '<3i', (3, 1, 2), 'axis order mapc/mapr/maps is (3, 1, 2); only 1, 2, 3 (x, y, z) is '
                             'supported'),
])
def test_corrupt_header(tmp_path, offset, fmt, value, reason):
    values = value if isinstance(value, tuple) else (value,)
    path = corrupt(tmp_path, offset, fmt, *values)
    for reader in (validate_mrc, read_map, lambda p: open_stack(p).__enter__(),
                   lambda p: read_images(p, [1])):
        with pytest.raises(MrcError) as err:
            reader(path)
        assert str(err.value) == f'{path}: {reason}'
        assert err.value.path == str(path) and isinstance(err.value, FormatError)


def test_complex_data_refused(tmp_path):
    path = tmp_path / 'fft.mrc'
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((2, 3, 4), np.complex64))
    assert validate_mrc(path)['mode'] == 4
    with pytest.raises(MrcError) as err:
        read_map(path)
    assert str(err.value) == (f'{path}: mode 4 holds complex numbers; real images or maps '
                              f'are expected')


def test_missing_file(tmp_path):
    path = tmp_path / 'nowhere.mrc'
    with pytest.raises(MrcError) as err:
        read_map(path)
    assert str(err.value) == f'{path}: file not found'


def test_file_shorter_than_header(tmp_path):
    path = tmp_path / 'short.mrc'
    path.write_bytes(b'\0' * 100)
    with pytest.raises(MrcError) as err:
        validate_mrc(path)
    assert str(err.value) == f'{path}: file is 100 bytes, shorter than the 1024-byte MRC header'


def test_truncated_data(tmp_path, stack):
    path = tmp_path / 'cut.mrcs'
    write_stack(path, stack, 1.0)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(MrcError, match=r'cut\.mrcs: file is shorter than the header says: 7 x 12 '
                                       r'x 9 mode 2 needs 3024 data bytes after byte 1024, '
                                       r'found 3014'):
        read_images(path, [1])
