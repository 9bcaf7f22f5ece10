"""cryoSPARC ``.cs`` files, job folders and label files (formats layer)."""
import json
import pickle
import shutil

import numpy as np
import pytest

from scipion_reciprocal.formats.cryosparc import (CsError, CsParticles, clean_path, load_cs,
                                                  write_cs)
from scipion_reciprocal.formats.cryosparc_jobs import (CsJobError, find_cs_job,
                                                       parse_cs_job_list, project_of_file)
from scipion_reciprocal.formats.labels import LabelFileError, read_labels
from scipion_reciprocal.simulate.cryosparc import join_fields, write_cs_job

N = 12


def _main(uids):
    return join_fields({'uid': uids, 'alignments3D/class': np.arange(len(uids)) % 3,
                        'alignments3D/class_posterior': np.linspace(0.5, 1, len(uids)),
                        'alignments3D/pose': np.arange(3 * len(uids), dtype=np.float32)
                        .reshape(-1, 3)})


def _passthrough(uids):
    return join_fields({'uid': uids,
                        'blob/path': np.array([b'>J1/imported/0001_a.mrcs'] * len(uids)),
                        'blob/idx': np.arange(len(uids), dtype=np.uint32),
                        'alignments3D/class': np.full(len(uids), 7, dtype=np.uint32)})


@pytest.fixture
def uids():
    return np.random.default_rng(0).integers(0, 2 ** 64 - 1, N, dtype=np.uint64,
                                             endpoint=True)


def test_round_trip_is_memory_mapped_and_exact(tmp_path, uids):
    array = _main(uids)
    write_cs(tmp_path / 'a.cs', array)
    assert not list(tmp_path.glob('.*.tmp')) and not (tmp_path / 'a.cs.npy').exists()
    loaded = load_cs(tmp_path / 'a.cs')
    assert isinstance(loaded, np.memmap)
    assert loaded.dtype == array.dtype and np.array_equal(loaded, array)
    assert np.array_equal(np.load(tmp_path / 'a.cs'), array)


def test_passthrough_joined_by_uid_in_any_order(tmp_path, uids):
    write_cs(tmp_path / 'main.cs', _main(uids))
    order = np.random.default_rng(1).permutation(N)
    write_cs(tmp_path / 'pass.cs', _passthrough(uids)[order])
    particles = CsParticles(tmp_path / 'main.cs', [tmp_path / 'pass.cs'])
    assert len(particles) == N
    assert particles.fields == ['uid', 'alignments3D/class', 'alignments3D/class_posterior',
                                'alignments3D/pose', 'blob/path', 'blob/idx']
    # the passthrough's rows follow the main file's uids
    assert np.array_equal(particles.column('blob/idx'), np.arange(N))
    # a field in both files comes from the main file
    assert np.array_equal(particles.column('alignments3D/class'), np.arange(N) % 3)
    assert particles.field_source('blob/idx') == tmp_path / 'pass.cs'
    assert np.array_equal(particles.column('blob/idx', [3, 1]), [3, 1])


def test_columns_read_in_blocks_equal_the_whole_file(tmp_path, uids, monkeypatch):
    rng = np.random.default_rng(2)
    main, passthrough = _main(uids), _passthrough(uids)
    order = rng.permutation(N)
    write_cs(tmp_path / 'main.cs', main)
    write_cs(tmp_path / 'pass.cs', passthrough[order])
    monkeypatch.setattr(CsParticles, 'BLOCK_BYTES', 3 * main.dtype.itemsize)  # 3 rows a block
    particles = CsParticles(tmp_path / 'main.cs', [tmp_path / 'pass.cs'])
    rows = rng.integers(0, N, 20)                  # unsorted, with repeats
    for name in main.dtype.names:
        assert np.array_equal(particles.column(name), main[name]), name
        assert np.array_equal(particles.column(name, rows), main[name][rows]), name
    for name in ('blob/path', 'blob/idx'):
        assert np.array_equal(particles.column(name), passthrough[name]), name
        assert np.array_equal(particles.column(name, rows), passthrough[name][rows]), name
    assert len(particles.column('uid', [])) == 0


def test_subset_keeps_every_field_and_uid_verbatim(tmp_path, uids):
    main, passthrough = _main(uids), _passthrough(uids)
    write_cs(tmp_path / 'main.cs', main)
    write_cs(tmp_path / 'pass.cs', passthrough[::-1])
    particles = CsParticles(tmp_path / 'main.cs', [tmp_path / 'pass.cs'])
    rows = np.array([5, 0, 9])
    assert particles.write_subset(tmp_path / 'out.cs', rows) == 3
    subset = np.load(tmp_path / 'out.cs')
    assert subset.dtype.names == tuple(particles.fields)
    for name in main.dtype.names:
        assert np.array_equal(subset[name], main[name][rows]), name
    for name in ('blob/path', 'blob/idx'):
        assert np.array_equal(subset[name], passthrough[name][rows]), name
    assert subset['uid'].dtype == np.uint64 and list(subset['uid']) == list(uids[rows])
    # a single file: its rows exactly, same dtype
    single = CsParticles(tmp_path / 'main.cs')
    single.write_subset(tmp_path / 'one.cs', np.array([2, 3]))
    assert np.load(tmp_path / 'one.cs').tobytes() == main[[2, 3]].tobytes()


def test_unreadable_files_name_file_and_reason(tmp_path, uids):
    (tmp_path / 'csdat.cs').write_bytes(b'\x95CSDAT' + b'\0' * 32)
    with pytest.raises(CsError, match=r'csdat\.cs: .*compressed stream format'):
        load_cs(tmp_path / 'csdat.cs')
    write_cs(tmp_path / 'whole.cs', _main(uids))
    (tmp_path / 'cut.cs').write_bytes((tmp_path / 'whole.cs').read_bytes()[:-10])
    with pytest.raises(CsError, match=r'cut\.cs: truncated: 12 rows'):
        load_cs(tmp_path / 'cut.cs')
    (tmp_path / 'text.cs').write_text('uid,class\n1,2\n')
    with pytest.raises(CsError, match=r'text\.cs: not a cryoSPARC \.cs file'):
        load_cs(tmp_path / 'text.cs')
    with open(tmp_path / 'plain.cs', 'wb') as fh:
        np.save(fh, np.arange(4))
    with pytest.raises(CsError, match='not a table of particles'):
        load_cs(tmp_path / 'plain.cs')
    objects = np.empty(2, dtype=[('uid', '<u8'), ('blob/path', 'O')])
    with open(tmp_path / 'objects.cs', 'wb') as fh:
        np.save(fh, objects, allow_pickle=True)
    with pytest.raises(CsError, match='Python objects'):
        load_cs(tmp_path / 'objects.cs')
    with pytest.raises(CsError, match='missing.cs: file not found'):
        load_cs(tmp_path / 'missing.cs')
    write_cs(tmp_path / 'main.cs', _main(uids))
    write_cs(tmp_path / 'short.cs', _passthrough(uids)[:-2])
    short = CsParticles(tmp_path / 'main.cs', [tmp_path / 'short.cs'])
    assert np.array_equal(short.column('uid'), uids)      # the main file alone is fine
    with pytest.raises(CsError, match=r'short\.cs: 2 particles of .*main\.cs are missing'):
        short.column('blob/idx')
    with pytest.raises(CsError, match='are missing'):
        short.check()
    with pytest.raises(CsError, match='no field ctf/df1_A'):
        CsParticles(tmp_path / 'main.cs').column('ctf/df1_A')


def test_empty_file_loads(tmp_path, uids):
    write_cs(tmp_path / 'empty.cs', _main(uids)[:0])
    assert len(load_cs(tmp_path / 'empty.cs')) == 0


def test_clean_path_strips_export_marker():
    assert clean_path(b'>J1/imported/0001_a.mrcs') == 'J1/imported/0001_a.mrcs'
    assert clean_path(' J19/extract/x.mrc ') == 'J19/extract/x.mrc'


def _job(project, uid='J30', job_type='hetero_refine', uids=None):
    results = [('particles_all_classes', 'alignments3D', False, f'{uid}_00010_particles.cs',
                _main(uids)),
               ('particles_all_classes', 'alignments3D', False, f'{uid}_00020_particles.cs',
                _main(uids)[::-1]),
               ('particles_all_classes', 'blob', True,
                f'{uid}_passthrough_particles_all_classes.cs', _passthrough(uids)),
               ('particles_class_0', 'alignments3D', False, f'{uid}_class_00_final.cs',
                _main(uids)[:2])]
    return write_cs_job(project, uid, job_type, results, parents=['J1'])


def test_job_files_from_job_json_and_from_names(tmp_path, uids):
    folder = _job(tmp_path, uids=uids)
    document = json.loads((folder / 'job.json').read_text())
    assert document['type'] == 'hetero_refine'
    job = find_cs_job(tmp_path, 'J30')
    assert (job.uid, job.job_type, job.kind, job.found_by) == ('J30', 'hetero_refine', '3D',
                                                                'job.json')
    assert job.particles == folder / 'J30_00020_particles.cs'     # the final version
    assert job.passthrough == [folder / 'J30_passthrough_particles_all_classes.cs']
    assert job.project_dir == tmp_path
    assert np.array_equal(job.open().column('uid'), uids[::-1])
    # the same files found by name in a folder copied without job.json
    copy = tmp_path / 'copy'
    shutil.copytree(folder, copy / 'J30')
    (copy / 'J30' / 'job.json').unlink()
    by_name = find_cs_job(copy, '30')
    assert by_name.found_by == 'file names' and by_name.job_type == ''
    assert by_name.particles.name == 'J30_00020_particles.cs'
    assert [p.name for p in by_name.passthrough] == ['J30_passthrough_particles_all_classes.cs']
    assert project_of_file(by_name.particles) == copy.resolve()


def test_job_errors(tmp_path, uids):
    with pytest.raises(CsJobError, match='J9: folder not found'):
        find_cs_job(tmp_path, 'J9')
    write_cs_job(tmp_path, 'J5', 'extract_micrographs_multi',
                 [('picked', 'location', False, 'picked.cs', _passthrough(uids))])
    with pytest.raises(CsJobError, match=r'job J5 \(extract_micrographs_multi\) has no particle '
                                         r'output'):
        find_cs_job(tmp_path, 'J5')
    (tmp_path / 'J6').mkdir()
    with pytest.raises(CsJobError, match='no job.json and no J6_NNN_particles.cs'):
        find_cs_job(tmp_path, 'J6')
    assert parse_cs_job_list('J30, 31 P12/J32') == ['J30', 'J31', 'J32']
    with pytest.raises(ValueError, match="'job85' is not a cryoSPARC job"):
        parse_cs_job_list('J30 job85')


def test_label_files(tmp_path):
    labels = np.array([0, 2, 1, 1, 0])
    with open(tmp_path / 'labels.pkl', 'wb') as fh:
        pickle.dump(labels, fh)
    with open(tmp_path / 'kmeans_result.pkl', 'wb') as fh:
        pickle.dump({'centers': np.zeros((3, 2)), 'labels': labels.astype(float)}, fh)
    np.save(tmp_path / 'labels.npy', labels.astype(np.int32))
    (tmp_path / 'labels.csv').write_text('particle,label\n' + ''.join(
        f'{i},{v}\n' for i, v in enumerate(labels)))
    (tmp_path / 'labels.txt').write_text('\n'.join(map(str, labels)) + '\n')
    for name in ('labels.pkl', 'kmeans_result.pkl', 'labels.npy', 'labels.csv', 'labels.txt'):
        values = read_labels(tmp_path / name)
        assert values.dtype == np.int64 and values.tolist() == labels.tolist(), name
    with open(tmp_path / 'z.pkl', 'wb') as fh:
        pickle.dump(np.zeros((5, 8)), fh)
    with pytest.raises(LabelFileError, match=r'z\.pkl: holds float64 values of shape \(5, 8\)'):
        read_labels(tmp_path / 'z.pkl')
    with open(tmp_path / 'other.pkl', 'wb') as fh:
        pickle.dump({'z': 1}, fh)
    with pytest.raises(LabelFileError, match='a dict without "labels"'):
        read_labels(tmp_path / 'other.pkl')
    (tmp_path / 'frac.txt').write_text('1\n2.5\n')
    with pytest.raises(LabelFileError, match='label 2 is not an integer'):
        read_labels(tmp_path / 'frac.txt')
    with pytest.raises(LabelFileError, match='unknown label file kind .json'):
        (tmp_path / 'x.json').write_text('[]')
        read_labels(tmp_path / 'x.json')
