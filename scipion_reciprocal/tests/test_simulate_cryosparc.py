"""The simulated cryoSPARC project: cryoSPARC's folder layout, job documents and field types."""
import json

import numpy as np
import pytest

from scipion_reciprocal.formats.cryosparc import load_cs
from scipion_reciprocal.simulate.cryosparc import EXTRACT_JOB, IMPORT_JOB, demo_with_cryosparc

#: Field types of .cs files written by cryoSPARC (a 3D refinement of cryoDRGN's test data,
#: cryosparc_P12_J24_001_particles.cs, and an exported 2D classification,
#: cryosparc_J2_particles_exported.cs).
REAL_TYPES = {
    'uid': '<u8', 'blob/idx': '<u4', 'blob/shape': ('<u4', (2,)), 'blob/psize_A': '<f4',
    'blob/sign': '<f4', 'ctf/type': '|S9', 'ctf/exp_group_id': '<u4', 'ctf/accel_kv': '<f4',
    'ctf/cs_mm': '<f4', 'ctf/amp_contrast': '<f4', 'ctf/df1_A': '<f4', 'ctf/df2_A': '<f4',
    'ctf/df_angle_rad': '<f4', 'ctf/phase_shift_rad': '<f4', 'ctf/scale': '<f4',
    'ctf/scale_const': '<f4', 'ctf/shift_A': ('<f4', (2,)), 'ctf/tilt_A': ('<f4', (2,)),
    'ctf/trefoil_A': ('<f4', (2,)), 'ctf/tetra_A': ('<f4', (4,)), 'ctf/anisomag': ('<f4', (4,)),
    'ctf/bfactor': '<f4', 'alignments3D/split': '<u4', 'alignments3D/shift': ('<f4', (2,)),
    'alignments3D/pose': ('<f4', (3,)), 'alignments3D/psize_A': '<f4',
    'alignments3D/class_posterior': '<f4', 'alignments3D/class': '<u4',
    'alignments3D/class_ess': '<f4', 'alignments2D/shift': ('<f4', (2,)),
    'alignments2D/pose': '<f4', 'alignments2D/class_posterior': '<f4',
    'alignments2D/class': '<u4'}


@pytest.fixture(scope='module')
def project(tmp_path_factory):
    return demo_with_cryosparc(tmp_path_factory.mktemp('sim-cs'), {
        'J30': ('hetero_refine', 'Class3D/job085', IMPORT_JOB),
        'J31': ('class_3D', 'Class3D/job086', EXTRACT_JOB),
        'J32': ('class_2D', 'Class2D/job008', IMPORT_JOB)}, n_particles=50, seed=1)


def _type(dtype):
    return dtype.str if not dtype.shape else (dtype.base.str, dtype.shape)


def test_layout_and_job_documents(project):
    demo, _, cs = project
    folder = cs.project_dir
    assert (folder / 'project.json').is_file()
    hetero = json.loads((folder / 'J30' / 'job.json').read_text())
    assert hetero['type'] == 'hetero_refine' and hetero['parents'] == [IMPORT_JOB]
    groups = {(r['group_name'], r['name'], r['passthrough']): r['metafiles']
              for r in hetero['output_results']}
    assert groups[('particles_all_classes', 'alignments3D', False)] == [
        'J30/J30_00010_particles.cs', 'J30/J30_00020_particles.cs']
    assert groups[('particles_all_classes', 'location', True)] == [
        'J30/J30_passthrough_particles_all_classes.cs']
    for metafiles in groups.values():
        assert (folder / metafiles[-1]).is_file()
    two_d = json.loads((folder / 'J32' / 'job.json').read_text())
    assert {r['group_name'] for r in two_d['output_results']} == {'particles'}
    assert (folder / 'J32' / 'J32_020_particles.cs').is_file()
    assert (folder / 'J32' / 'J32_passthrough_particles.cs').is_file()
    # imported stacks are links to RELION's, with cryoSPARC's 21-digit uid prefix
    links = list((folder / IMPORT_JOB / 'imported').iterdir())
    assert len(links) == 1 and links[0].is_symlink()
    assert links[0].resolve() == (demo.project_dir / 'Extract/job007/particles.mrcs').resolve()
    assert links[0].name[21] == '_' and links[0].name[:21].isdigit()


def test_fields_have_cryosparcs_types_and_numbering(project):
    demo, _, cs = project
    for job in ('J30', 'J31', 'J32'):
        for path in cs.files[job]:
            array = load_cs(path)
            for name in array.dtype.names:
                if name in REAL_TYPES:
                    assert _type(array.dtype[name]) == REAL_TYPES[name], (path.name, name)
                elif name.endswith('path'):           # text as fixed-width bytes
                    assert array.dtype[name].kind == 'S', (path.name, name)
    main = load_cs(cs.files['J30'][0])
    assert [f for f in main.dtype.names if f.startswith('alignments_class_')][:3] == [
        'alignments_class_0/pose', 'alignments_class_0/shift',
        'alignments_class_0/class_posterior']
    labels = demo.labels['Class3D/job085']
    assert np.array_equal(main['alignments3D/class'], labels[cs.order['J30']] - 1)   # 0-based
    passthrough = load_cs(cs.files['J30'][1])
    assert passthrough['blob/path'][0].startswith(b'J1/imported/')
    assert sorted(passthrough['blob/idx']) == list(range(50))                        # 0-based
    # uids: kept by every job descending from one import, new after re-extraction
    assert set(main['uid']) == set(cs.uids[IMPORT_JOB])
    assert set(load_cs(cs.files['J31'][0])['uid']) == set(cs.uids[EXTRACT_JOB])
    assert not set(cs.uids[IMPORT_JOB]) & set(cs.uids[EXTRACT_JOB])
    extracted = load_cs(cs.files['J31'][1])
    assert all(p.startswith(b'J2/extract/') and p.endswith(b'_particles.mrc')
               for p in extracted['blob/path'])
