"""cryoSPARC conventions -> RELION's, checked on particles written in both forms."""
import os

import numpy as np
import pandas as pd
import pytest

from scipion_reciprocal.core.cryosparc_relion import (micrograph_positions,
                                                      relion_angles_from_poses,
                                                      relion_particles)
from scipion_reciprocal.core.geometry import relion_euler_to_matrix
from scipion_reciprocal.formats.cryosparc_jobs import find_cs_job
from scipion_reciprocal.formats.relion import parse_image_names
from scipion_reciprocal.simulate.cryosparc import demo_with_cryosparc


@pytest.fixture(scope='module')
def projects(tmp_path_factory):
    return demo_with_cryosparc(tmp_path_factory.mktemp('cs'), {
        'J30': ('hetero_refine', 'Class3D/job085', 'J1'),
        'J31': ('class_3D', 'Class3D/job086', 'J2'),
        'J32': ('class_2D', 'Class2D/job008', 'J1')}, n_particles=60, seed=11,
        cryosparc_seed=4)


def _rodrigues_transposed(pose):
    """RELION's matrix of a cryoSPARC pose as cryoDRGN's parse_pose_csparc and pyem's
    expmap build it: the transposed Rodrigues rotation of the vector."""
    theta = np.linalg.norm(pose)
    x, y, z = pose / theta
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return (np.eye(3) + np.sin(theta) * k + (1 - np.cos(theta)) * k @ k).T


def test_pose_convention_matches_cryodrgn_and_pyem():
    poses = np.random.default_rng(3).normal(size=(20, 3))
    angles = relion_angles_from_poses(poses)
    matrices = relion_euler_to_matrix(*angles.T)
    for pose, matrix in zip(poses, matrices):
        np.testing.assert_allclose(matrix, _rodrigues_transposed(pose), atol=1e-12)
    assert np.all((angles[:, 1] >= 0) & (angles[:, 1] <= 180))


@pytest.mark.parametrize('job, relion_job', [('J30', 'Class3D/job085'),
                                             ('J32', 'Class2D/job008')])
def test_same_particles_read_back_in_relion_conventions(projects, job, relion_job):
    demo, star, cs = projects
    particles = find_cs_job(cs.project_dir, job).open()
    table, optics = relion_particles(particles, cs.project_dir)
    truth = star.particles.iloc[cs.order[job]].reset_index(drop=True)
    # classes: 0-based in the .cs, RELION's 1-based here
    assert table['rlnClassNumber'].tolist() == list(demo.labels[relion_job][cs.order[job]])
    for column in ('rlnDefocusU', 'rlnDefocusV', 'rlnDefocusAngle', 'rlnCoordinateX',
                   'rlnCoordinateY'):
        np.testing.assert_allclose(table[column], truth[column], rtol=2e-6, atol=1e-3)
    # the shifts of heterogeneous refinement are in pixels of twice the stack's pixel size
    psize = particles.column('alignments2D/psize_A' if job == 'J32' else 'alignments3D/psize_A')
    assert np.allclose(psize, star.optics['rlnImagePixelSize'].iloc[0] * (2 if job == 'J30'
                                                                          else 1))
    np.testing.assert_allclose(table[['rlnOriginXAngst', 'rlnOriginYAngst']],
                               truth[['rlnOriginXAngst', 'rlnOriginYAngst']], atol=2e-5)
    angles = ['rlnAngleRot', 'rlnAngleTilt', 'rlnAnglePsi']
    expected = truth[angles].to_numpy()
    if job == 'J32':
        expected = np.column_stack([np.zeros(len(truth)), np.zeros(len(truth)), expected[:, 2]])
    np.testing.assert_allclose(relion_euler_to_matrix(*table[angles].to_numpy().T),
                               relion_euler_to_matrix(*expected.T), atol=2e-6)
    # the image of every row is the same image of the same file (0- vs 1-based handled)
    index, stacks = parse_image_names(table['rlnImageName'])
    relion_index, relion_stacks = parse_image_names(truth['rlnImageName'])
    assert list(index) == list(relion_index)
    assert {os.path.realpath(s) for s in stacks} == \
        {os.path.realpath(demo.project_dir / s) for s in set(relion_stacks)}
    assert optics[['rlnImagePixelSize', 'rlnImageSize', 'rlnVoltage']].values.tolist() == \
        star.optics[['rlnImagePixelSize', 'rlnImageSize', 'rlnVoltage']].values.tolist()
    assert table['rlnMaxValueProbDistribution'].between(0.6, 1.0).all()


def test_reextracted_positions_within_jitter(projects):
    _, star, cs = projects
    particles = find_cs_job(cs.project_dir, 'J31').open()
    truth = star.particles.iloc[cs.order['J31']].reset_index(drop=True)
    mics, x, y, size = micrograph_positions(particles, flip_y=False)
    assert np.abs(x - truth['rlnCoordinateX']).max() <= 0.5 + 1e-3
    assert np.abs(y - truth['rlnCoordinateY']).max() <= 0.5 + 1e-3
    assert np.allclose(size, star.optics['rlnMicrographOriginalPixelSize'].iloc[0])
    assert all(m.startswith('S1/motioncorrected/') and m.endswith(
        '_patch_aligned_doseweighted.mrc') for m in mics)
    # new stacks, one per micrograph, images counted from 0 in each
    stacks = pd.Series(particles.column('blob/path'))
    index = particles.column('blob/idx')
    for _, rows in stacks.groupby(stacks).groups.items():
        assert sorted(index[rows]) == list(range(len(rows)))


def test_hard_classes_from_class_fields_or_per_class_posteriors(tmp_path):
    from scipion_reciprocal.core.cryosparc_relion import hard_classes
    from scipion_reciprocal.formats.cryosparc import CsError, CsParticles, write_cs
    from scipion_reciprocal.simulate.cryosparc import join_fields
    rng = np.random.default_rng(0)
    posteriors = rng.dirichlet(np.ones(4), size=10).astype(np.float32)
    write_cs(tmp_path / 'multi.cs', join_fields({'uid': np.arange(10, dtype=np.uint64),
                                                 'alignments3D_multi/class_posterior':
                                                     posteriors}))
    hard = hard_classes(CsParticles(tmp_path / 'multi.cs'))
    assert hard.classes.tolist() == list(posteriors.argmax(axis=1) + 1)
    assert np.allclose(hard.confidence, posteriors.max(axis=1)) and hard.n_classes == 4
    fields = {'uid': np.arange(10, dtype=np.uint64),
              'alignments2D/class': np.arange(10, dtype=np.uint32) % 3,
              'alignments2D/class_posterior': np.full(10, 0.9, np.float32)}
    fields.update({f'alignments_class_{k}/class_posterior': np.zeros(10, np.float32)
                   for k in range(5)})
    write_cs(tmp_path / 'two.cs', join_fields(fields))
    hard = hard_classes(CsParticles(tmp_path / 'two.cs'))
    assert hard.classes.tolist() == list(np.arange(10) % 3 + 1)
    assert (hard.kind, hard.field, hard.n_classes) == ('2D', 'alignments2D/class', 5)
    write_cs(tmp_path / 'none.cs', join_fields({'uid': np.arange(3, dtype=np.uint64)}))
    with pytest.raises(CsError, match=r'none\.cs: no class field'):
        hard_classes(CsParticles(tmp_path / 'none.cs'))


def test_y_axis_follows_the_micrograph(projects):
    """Particles on micrographs cryoSPARC did not motion-correct (J30, imported from RELION)
    have Y from the bottom; those re-extracted from its own motion-corrected micrographs
    (J31) not: by default both come out as RELION's positions, and a fixed choice wins."""
    from scipion_reciprocal.core.cryosparc_relion import y_from_bottom
    _, star, cs = projects
    for job, flipped in (('J30', True), ('J31', False)):
        particles = find_cs_job(cs.project_dir, job).open()
        assert (y_from_bottom(particles.column('location/micrograph_path')) == flipped).all()
        truth = star.particles.iloc[cs.order[job]].reset_index(drop=True)
        table, _ = relion_particles(particles, cs.project_dir)
        for axis in ('X', 'Y'):
            error = np.abs(table[f'rlnCoordinate{axis}'] - truth[f'rlnCoordinate{axis}'])
            assert error.max() <= (0.5 if job == 'J31' else 0.0) + 1e-3
        forced, _ = relion_particles(particles, cs.project_dir, flip_y=not flipped)
        height = particles.column('location/micrograph_shape')[:, 0]
        np.testing.assert_allclose(forced['rlnCoordinateY'], height - table['rlnCoordinateY'],
                                   atol=1e-3)
    assert y_from_bottom([b'J5/motioncorrected/001_a_patch_aligned_doseweighted.mrc',
                          b'MotionCorr/job002/Movies/a.mrc', b'J9/b_rigid_aligned.mrc',
                          b'>J5/motioncorrected/c.mrc', b'S1/a_DW.mrc']).tolist() == \
        [False, True, False, False, True]


def test_star_size_estimate(projects, tmp_path):
    """The bytes per particle of the STAR conversion, from a sample, bound the file that
    the conversion writes."""
    from scipion_reciprocal.core.cryosparc_relion import star_bytes_per_row
    from scipion_reciprocal.formats.star import write_particles_star
    _, _, cs = projects
    particles = find_cs_job(cs.project_dir, 'J31').open()
    table, optics = relion_particles(particles, cs.project_dir)
    write_particles_star(tmp_path / 'all.star', table, optics)
    actual = (tmp_path / 'all.star').stat().st_size
    assert star_bytes_per_row(particles) * len(particles) == actual    # every row sampled
    estimate = star_bytes_per_row(particles, sample=20) * len(particles)
    assert actual <= estimate <= 1.3 * actual
