"""Rigid alignment of maps: conventions, recovery of known rotations and shifts, mirror."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from scipion_reciprocal.core.mapsim.align import (align_maps, apply_transform, euler_zyz,
                                                  make_transform, mirror_map, rotation_grid,
                                                  split_transform, trilinear)
from scipion_reciprocal.core.mapsim.grid import soft_sphere
from scipion_reciprocal.simulate.molecule import molecule_maps, rotate_map

BOX = 32


def corr(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def angle_between(r1, r2):
    return np.degrees(Rotation.from_matrix(r1 @ r2.T).magnitude())


@pytest.fixture(scope='module')
def states():
    return molecule_maps(2, box=BOX, pixel_size=4.0, seed=0)


def test_transform_convention_matches_rotate_map(states):
    rotation = Rotation.from_euler('ZYZ', [30, 50, -20], degrees=True).as_matrix()
    shift = np.array([1.5, -2.0, 0.5])
    ours = apply_transform(states[0], make_transform(rotation, shift), order=3, fill=0.0)
    np.testing.assert_allclose(ours, rotate_map(states[0], rotation, shift), atol=1e-4)
    h = make_transform(rotation, shift, mirror=True)
    r, t, m = split_transform(h)
    np.testing.assert_allclose(r, rotation, atol=1e-12)
    np.testing.assert_allclose(t, shift)
    assert m and np.linalg.det(h[:3, :3]) == pytest.approx(-1.0)
    np.testing.assert_allclose(euler_zyz(rotation), [30, 50, -20], atol=1e-9)


def test_mirror_map_flips_z_about_the_centre():
    volume = np.zeros((8, 8, 8), np.float32)
    volume[6, 1, 2] = 1.0                              # z = +2 from the centre (index 4)
    assert mirror_map(volume)[2, 1, 2] == 1.0          # z = -2
    np.testing.assert_array_equal(mirror_map(mirror_map(volume)), volume)


def test_trilinear_is_exact_on_the_grid_and_for_linear_functions():
    box = 10
    z, y, x = np.indices((box, box, box)) - box // 2
    linear = (2.0 * x - 3.0 * y + 0.5 * z + 1.0).astype(np.float32)
    data = linear.reshape(-1, 1)
    rng = np.random.default_rng(0)
    points = rng.uniform(-4.0, 3.9, (500, 3)).astype(np.float32)
    expected = 2.0 * points[:, 0] - 3.0 * points[:, 1] + 0.5 * points[:, 2] + 1.0
    np.testing.assert_allclose(trilinear(data, box, points)[:, 0], expected, atol=1e-4)
    grid_points = np.array([[1, -2, 3], [-5, 4, 0]], np.float32)
    np.testing.assert_allclose(trilinear(data, box, grid_points)[:, 0],
                               [linear[3 + 5, -2 + 5, 1 + 5], linear[5, 4 + 5, -5 + 5]])


def test_rotation_grid_covers_so3():
    grid = rotation_grid(2000).as_quat()
    probes = Rotation.random(3000, random_state=7).as_quat()
    nearest = np.degrees(2 * np.arccos(np.clip(np.abs(probes @ grid.T).max(axis=1), 0, 1)))
    assert nearest.max() < 18.0 and nearest.mean() < 11.0


def test_rotated_shifted_copy_is_recovered(states):
    rng = np.random.default_rng(3)
    rotation = Rotation.from_euler('ZYZ', [140, 70, -35], degrees=True).as_matrix()
    shift = np.array([2.5, -1.5, 3.0])
    copy = rotate_map(states[0], rotation, shift)
    noisy = copy + rng.normal(0, 0.1 * copy.std(), copy.shape).astype(np.float32)
    result = align_maps([states[0], noisy, states[1]], mode='reference')
    expected = np.linalg.inv(make_transform(rotation, shift))
    found = result.transforms[1]
    assert angle_between(found[:3, :3], expected[:3, :3]) < 2.0
    np.testing.assert_allclose(found[:3, 3], expected[:3, 3], atol=0.5)
    aligned = apply_transform(copy, found)
    assert corr(aligned, states[0]) > 0.95
    assert corr(copy, states[0]) < 0.5                  # it was far off before
    assert result.scores[1] > 0.95 and result.scores[0] == 1.0
    np.testing.assert_array_equal(result.transforms[0], np.eye(4))
    assert set(result.timings) == {'load and pyramids', 'global scan', 'refine to reference'}


def test_mirror_image_is_found_only_when_asked(states):
    rotation = Rotation.from_euler('ZYZ', [-60, 100, 10], degrees=True).as_matrix()
    flipped = rotate_map(mirror_map(states[1]), rotation, (1.0, 0.0, -2.0))
    weights = soft_sphere(BOX, radius=13)
    with_mirror = align_maps([states[1], flipped], mirror=True, weights=weights)
    rotation_found, _, mirrored = split_transform(with_mirror.transforms[1])
    assert mirrored
    assert corr(apply_transform(flipped, with_mirror.transforms[1]), states[1]) > 0.95
    without = align_maps([states[1], flipped], mirror=False, weights=weights)
    assert not split_transform(without.transforms[1])[2]
    assert without.scores[1] < with_mirror.scores[1] - 0.02


def test_pairwise_alignment_is_consistent(states):
    rng = np.random.default_rng(5)
    maps = []
    for k in range(4):
        rotation = Rotation.random(random_state=10 + k).as_matrix()
        maps.append(rotate_map(states[k % 2], rotation, rng.uniform(-2, 2, 3)))
    result = align_maps(maps, mode='pairwise', reference=1)
    s = result.pair_scores
    np.testing.assert_allclose(s, s.T)
    np.testing.assert_array_equal(np.diag(s), 1.0)
    assert s[0, 2] > 0.95 and s[1, 3] > 0.95            # same state
    assert max(s[0, 1], s[0, 3], s[1, 2], s[2, 3]) < min(s[0, 2], s[1, 3])
    np.testing.assert_allclose(result.pair_transforms[2, 0],
                               np.linalg.inv(result.pair_transforms[0, 2]), atol=1e-9)
    np.testing.assert_allclose(result.pair_transforms[1], result.transforms)
    moved = apply_transform(maps[2], result.pair_transforms[0, 2])
    assert corr(moved, maps[0]) > 0.95
