"""Simulated micrographs: placement rules, junk, extracted good/bad boxes and written files."""
import mrcfile
import numpy as np
import pytest
import starfile

from scipion_reciprocal.formats.mrc import read_images
from scipion_reciprocal.formats.relion import parse_image_names
from scipion_reciprocal.formats.star import read_particles_star, read_star
from scipion_reciprocal.simulate.micrographs import (concatenate_micrographs,
                                                     good_bad_particle_sets, simulate_micrographs,
                                                     write_coordinates_star, write_good_bad_sets,
                                                     write_micrographs, write_micrographs_star)
from scipion_reciprocal.simulate.molecule import molecule_maps

BOX = 32


@pytest.fixture(scope='module')
def maps():
    return molecule_maps(3, BOX, 4.0, seed=0)


@pytest.fixture(scope='module')
def sim(maps):
    return simulate_micrographs(maps, n_micrographs=3, shape=(384, 448),
                                particles_per_micrograph=15, particle_box=BOX, min_distance=40,
                                n_ice_blobs=3, seed=7)


@pytest.fixture(scope='module')
def sets(sim):
    return good_bad_particle_sets(sim, n_bad=30, seed=1)


def test_shapes_determinism(sim, maps):
    assert sim.images.shape == (3, 384, 448) and sim.images.dtype == np.float32
    again = simulate_micrographs(maps, 3, (384, 448), 15, BOX, min_distance=40, seed=7)
    np.testing.assert_array_equal(sim.images, again.images)
    other = simulate_micrographs(maps, 3, (384, 448), 15, BOX, min_distance=40, seed=8)
    assert not np.array_equal(sim.coordinates[['x', 'y']], other.coordinates[['x', 'y']])
    assert sim.defocus.shape == (3, 3) and len(sim.junk) == 9 and len(sim.carbon) == 3


def test_particles_are_inside_apart_and_clear_of_junk_and_carbon(sim):
    coords = sim.coordinates
    assert np.bincount(coords['micrograph']).tolist() == [15, 15, 15]
    half = BOX // 2
    assert coords['x'].between(half, 448 - half - 1).all()
    assert coords['y'].between(half, 384 - half - 1).all()
    assert set(coords['state']) <= {0, 1, 2}
    for mic, group in coords.groupby('micrograph'):
        xy = group[['x', 'y']].to_numpy(dtype=float)
        distances = np.hypot(*(xy[:, None] - xy[None]).transpose(2, 0, 1))
        assert distances[np.triu_indices(len(xy), 1)].min() >= 40
        for _, blob in sim.junk[sim.junk['micrograph'] == mic].iterrows():
            assert np.all(np.hypot(xy[:, 0] - blob['x'], xy[:, 1] - blob['y'])
                          >= blob['radius'] + half)
        assert np.all(sim.carbon_distance(mic, xy[:, 0], xy[:, 1]) <= -half)


def test_junk_and_carbon_are_visible(sim):
    image = sim.images[0].astype(np.float64)
    y, x = np.indices(image.shape)
    on_carbon = sim.carbon_distance(0, x, y) > 10
    off_carbon = sim.carbon_distance(0, x, y) < -10
    assert image[on_carbon].mean() < image[off_carbon].mean() - 0.5 * sim.noise_sigma
    for _, blob in sim.junk[sim.junk['micrograph'] == 0].iterrows():
        inside = np.hypot(x - blob['x'], y - blob['y']) < 0.7 * blob['radius']
        assert np.sign(image[inside].mean() - image[off_carbon].mean()) == np.sign(blob['contrast'])


def test_particles_make_signal_with_the_requested_snr(maps):
    clean = simulate_micrographs(maps, 1, (256, 256), 8, BOX, n_ice_blobs=0, carbon_edge=False,
                                 snr=1e12, seed=3)
    noisy = simulate_micrographs(maps, 1, (256, 256), 8, BOX, n_ice_blobs=0, carbon_edge=False,
                                 snr=0.3, seed=3)
    noise = noisy.images[0].astype(np.float64) - clean.images[0]
    half = BOX // 2
    boxes = [clean.images[0][y - half:y + half, x - half:x + half].var()
             for x, y in clean.coordinates[['x', 'y']].to_numpy()]
    assert noise.std() == pytest.approx(noisy.noise_sigma, rel=0.02)
    assert np.mean(boxes) / noise.var() == pytest.approx(0.3, rel=0.05)


def test_good_and_bad_boxes(sim, sets):
    good, bad = sets.good, sets.bad
    assert good.images.shape == (45, BOX, BOX) and bad.images.shape == (30, BOX, BOX)
    np.testing.assert_array_equal(good.states, sim.coordinates['state'])
    assert np.all(bad.states == -1)
    assert sorted(set(sets.bad_kinds)) == ['carbon', 'carbon_area', 'empty', 'ice']
    # 30 boxes in turn over the four kinds: 8, 8, 7, 7 (ice, carbon, carbon_area, empty).
    assert [int(np.sum(sets.bad_kinds == k)) for k in ('ice', 'carbon', 'carbon_area', 'empty')] \
        == [8, 8, 7, 7]
    # Boxes are the micrograph pixels, contrast-inverted and normalised on the background.
    row = good.metadata.iloc[4]
    mic = sim.coordinates['micrograph'].iloc[4]
    x, y = int(row['rlnCoordinateX']), int(row['rlnCoordinateY'])
    raw = -sim.images[mic, y - 16:y + 16, x - 16:x + 16].astype(np.float64)
    yy, xx = np.indices((BOX, BOX)) - 16
    background = np.hypot(xx, yy) > 0.4 * BOX
    expected = (raw - raw[background].mean()) / raw[background].std()
    np.testing.assert_allclose(good.images[4], expected, atol=1e-5)
    # Bad boxes sit where their kind says.
    for kind, (_, meta) in zip(sets.bad_kinds, bad.metadata.iterrows()):
        mic = int(meta['rlnMicrographName'][-7:-4]) - 1
        bx, by = meta['rlnCoordinateX'], meta['rlnCoordinateY']
        blobs = sim.junk[sim.junk['micrograph'] == mic]
        to_blobs = np.hypot(blobs['x'] - bx, blobs['y'] - by) - blobs['radius']
        if kind == 'ice':
            assert to_blobs.min() < 1.0
        elif kind == 'carbon':
            assert abs(sim.carbon_distance(mic, bx, by)) <= BOX / 4 + 1
        elif kind == 'carbon_area':
            assert sim.carbon_distance(mic, bx, by) > BOX / 2 - 1
        else:
            particles = sim.coordinates[sim.coordinates['micrograph'] == mic]
            assert np.hypot(particles['x'] - bx, particles['y'] - by).min() >= 40
            assert to_blobs.min() >= BOX / 2 - 1
    np.testing.assert_allclose(good.metadata['rlnDefocusU'],
                               sim.defocus[sim.coordinates['micrograph'], 0])


def test_written_micrographs_coordinates_and_sets(tmp_path, sim, sets):
    paths = write_micrographs(tmp_path, sim)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        f'MotionCorr/job002/Movies/mic_{i:03d}.mrc' for i in (1, 2, 3)]
    with mrcfile.open(paths[1]) as mrc:
        np.testing.assert_array_equal(mrc.data, sim.images[1])
        assert mrc.voxel_size.x == pytest.approx(4.0)
    micrographs = read_star(write_micrographs_star(tmp_path, sim)).blocks
    assert micrographs['micrographs']['rlnMicrographName'].tolist() == sim.micrograph_names()
    np.testing.assert_allclose(micrographs['micrographs']['rlnDefocusU'], sim.defocus[:, 0],
                               atol=1e-5)
    assert micrographs['optics']['rlnMicrographPixelSize'].tolist() == [4.0]

    coordinate_files = write_coordinates_star(tmp_path, sim)
    assert coordinate_files[0] == tmp_path / 'AutoPick/job004/Movies/mic_001_autopick.star'
    table = starfile.read(coordinate_files[2])
    expected = sim.coordinates[sim.coordinates['micrograph'] == 2]
    np.testing.assert_array_equal(table['rlnCoordinateX'], expected['x'])
    np.testing.assert_array_equal(table['rlnCoordinateY'], expected['y'])
    assert (tmp_path / 'AutoPick/job004/coords_suffix_autopick.star').read_text().strip() == \
        'CtfFind/job003/micrographs_ctf.star'

    all_star, good_star, bad_star = write_good_bad_sets(tmp_path, sets)
    everything = read_particles_star(all_star).particles
    good = read_particles_star(good_star).particles
    bad = read_particles_star(bad_star).particles
    assert len(everything) == 75 and len(good) == 45 and len(bad) == 30
    assert everything['rlnImageName'].tolist() == good['rlnImageName'].tolist() + \
        bad['rlnImageName'].tolist()
    indices, stacks = parse_image_names(bad['rlnImageName'])
    assert set(stacks) == {'Extract/job010/particles.mrcs'}
    np.testing.assert_array_equal(read_images(tmp_path / stacks[0], indices), sets.bad.images)
    for name in set(good['rlnMicrographName']):
        assert (tmp_path / name).exists()


def test_sets_simulated_apart_join_into_one(sim, maps):
    more = simulate_micrographs(maps, 2, (384, 448), 10, BOX, min_distance=40, seed=9)
    joined = concatenate_micrographs([sim, more])
    assert joined.images.shape == (5, 384, 448)
    np.testing.assert_array_equal(joined.images[3:], more.images)
    assert np.bincount(joined.coordinates['micrograph']).tolist() == [15, 15, 15, 10, 10]
    np.testing.assert_array_equal(joined.coordinates[['x', 'y']].to_numpy()[45:],
                                  more.coordinates[['x', 'y']].to_numpy())
    assert joined.junk['micrograph'].max() == 4 and joined.carbon['micrograph'].tolist() == list(range(5))
    # Geometry follows its micrograph: the carbon of micrograph 3 is the second set's first.
    assert joined.carbon_distance(3, 100, 100) == more.carbon_distance(0, 100, 100)
    assert joined.noise_sigma == pytest.approx((sim.noise_sigma + more.noise_sigma) / 2)
    boxes = good_bad_particle_sets(joined, n_bad=12, seed=2)
    assert len(boxes.good.images) == 65
    other_box = simulate_micrographs(maps, 1, (384, 448), 5, 24, seed=3)
    with pytest.raises(ValueError, match='particle_box'):
        concatenate_micrographs([sim, other_box])


def test_placement_error_when_crowded(maps):
    with pytest.raises(ValueError, match='room for only'):
        simulate_micrographs(maps, 1, (96, 96), 20, BOX, seed=0)
