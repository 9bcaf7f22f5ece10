"""Simulated cryo-ET tilt series: the scheme, the geometry (checked against RECOVAR's own
RELION 5 converter when its environment is installed), the dose filter and the files."""
import os
import subprocess

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from scipion_reciprocal.formats import cryodrgn
from scipion_reciprocal.formats.mrc import read_images
from scipion_reciprocal.formats.relion_tomo import project_root, relion5_errors
from scipion_reciprocal.formats.relion import merge_optics
from scipion_reciprocal.formats.star import read_particles_star
from scipion_reciprocal.simulate import tilt_series as ts
from scipion_reciprocal.simulate.ctf import critical_exposure, ctf_stack, dose_weights
from scipion_reciprocal.simulate.molecule import molecule_maps
from scipion_reciprocal.simulate.particles import FourierProjector

BOX, PIXEL = 16, 6.0


@pytest.fixture(scope="module")
def maps():
    return molecule_maps(n_states=2, box=BOX, pixel_size=PIXEL, seed=0)


@pytest.fixture(scope="module")
def sim(maps):
    return ts.simulate_tilt_series(maps, n_particles=12, n_tilts=5, tilt_step=20.0,
                                   dose_per_tilt=3.0, particles_per_tomogram=5, snr=np.inf,
                                   pixel_size=PIXEL, seed=3)


def test_dose_symmetric_scheme_orders_tilts_and_doses():
    angles, dose = ts.dose_symmetric_scheme(5, 15.0, 3.0)
    # Acquired 0, +15, -15, +30, -30: 0, 3, 6, 9, 12 e/A^2 before each.
    np.testing.assert_allclose(angles, [-30, -15, 0, 15, 30])
    np.testing.assert_allclose(dose, [12, 6, 0, 3, 9])


def test_dose_filter_follows_the_critical_exposure():
    weights = dose_weights(BOX, PIXEL, [0.0, 10.0])
    assert weights.shape == (2, BOX, BOX // 2 + 1)
    np.testing.assert_allclose(weights[0], 1.0)
    assert weights[1, 0, 0] == 1.0  # the zero frequency is never attenuated
    s = 1.0 / (2 * PIXEL)  # Nyquist, along x
    assert weights[1, 0, BOX // 2] == pytest.approx(np.exp(-0.5 * 10.0 / critical_exposure(s)))
    # Grant & Grigorieff: Ne(s) = 0.245 s^-1.665 + 2.81 at 300 kV.
    assert critical_exposure(0.1) == pytest.approx(0.245 * 10 ** 1.665 + 2.81)


def test_defocus_varies_with_depth_in_the_tilted_plane(sim):
    defocus = sim.image_defocus()
    tilts = np.deg2rad(sim.tilt_angles)
    axis = np.deg2rad(sim.tilt_axis)
    # Depth = third row of Rz(axis) Ry(tilt) applied to the position: the z row of Rz is (0,0,1).
    x, y, z = sim.positions.T
    rz = Rotation.from_rotvec([0, 0, axis]).as_matrix()
    for t, tilt in enumerate(tilts):
        ry = Rotation.from_rotvec([0, tilt, 0]).as_matrix()
        depth = (rz @ ry)[2] @ sim.positions.T
        base = sim.tilt_defocus[sim.tomograms, t]
        np.testing.assert_allclose(defocus[:, t, 0], base[:, 0] + depth, atol=1e-6)
        np.testing.assert_allclose(defocus[:, t, 1], base[:, 1] + depth, atol=1e-6)
        # At 0 degrees the depth is the particle's height z; tilted, x enters as -x sin(tilt).
        if tilt == 0:
            np.testing.assert_allclose(depth, z, atol=1e-6)
        else:
            np.testing.assert_allclose(depth, -np.sin(tilt) * x + np.cos(tilt) * z, atol=1e-6)


def test_images_are_dose_weighted_scaled_ctf_projections(sim, maps):
    """A noise-free tilt image, rebuilt from the 2D angles and defocus written in the STAR."""
    angles = sim.image_angles()
    defocus = sim.image_defocus()
    p, t = 4, 0  # the most tilted image
    matrix = Rotation.from_euler("ZYZ", angles[p, t], degrees=True).inv().as_matrix()
    projector = FourierProjector(maps[sim.states[p]])
    ft = projector.project_ft(matrix[None])[0]
    ft *= ctf_stack(BOX, PIXEL, defocus[p, t][None])[0]
    ft *= dose_weights(BOX, PIXEL, sim.pre_exposure[t])[0] * np.cos(np.deg2rad(sim.tilt_angles[t]))
    np.testing.assert_allclose(sim.images[p, t], projector.image_from_ft(ft), atol=1e-5)
    # The most exposed, most tilted image carries less signal than the first one acquired.
    first = int(np.argmin(sim.pre_exposure))
    assert sim.images[:, t].std() < sim.images[:, first].std()


def test_tilt_star_has_what_recovar_reads(sim, tmp_path):
    for model, dose_column in ((ts.CTF_RELION5, "rlnMicrographPreExposure"),
                               (ts.CTF_WARP, "rlnCtfBfactor")):
        star = ts.write_tilt_particle_star(tmp_path / model, sim, model)
        table = read_particles_star(star).particles
        assert len(table) == sim.n_particles * sim.n_tilts
        assert {"rlnGroupName", "rlnCtfScalefactor", dose_column} <= set(table.columns)
        dose = table[dose_column].to_numpy(float)
        np.testing.assert_allclose(dose if model == ts.CTF_RELION5 else -dose / 4,
                                   np.tile(sim.pre_exposure, sim.n_particles))
        # Every particle's stack holds its tilts in tilt-angle order.
        first = table.iloc[sim.n_tilts]
        index, path = first["rlnImageName"].split("@")
        image = read_images(tmp_path / model / path, [int(index)])[0]
        np.testing.assert_allclose(image, sim.images[1, 0], atol=1e-6)
    units, groups = cryodrgn.tilt_units(table["rlnGroupName"])
    assert len(groups) == sim.n_particles
    assert np.all(np.bincount(units) == sim.n_tilts)


def test_relion5_project_is_complete(sim, tmp_path):
    tomograms, particles = ts.write_relion5_project(tmp_path, sim)
    assert project_root(tomograms) == tmp_path.resolve()
    assert relion5_errors(str(tomograms), str(particles)) == []
    other = ts.write_tilt_particle_star(tmp_path / "flat", sim)
    errors = relion5_errors(str(tomograms), str(other))
    assert len(errors) == 1 and "rlnCenteredCoordinateXAngst" in errors[0]


RECOVAR_PYTHON = os.path.join(os.environ.get("SCIPION_SOFTWARE", ""), "em", "recovar-1.0.5",
                              "env", "bin", "python")


@pytest.mark.skipif(not os.path.exists(RECOVAR_PYTHON), reason="RECOVAR environment absent")
def test_geometry_matches_recovars_relion5_converter(sim, tmp_path):
    """RECOVAR's parse_relion5_tomo, given the RELION 5 project, writes the simulator's own 2D
    rows: depth-corrected defocus, tilt-image orientations, dose and scale."""
    tomograms, particles = ts.write_relion5_project(tmp_path / "relion5", sim)
    parsed = tmp_path / "parsed.star"
    subprocess.run([RECOVAR_PYTHON, "-m", "recovar.commands.parse_relion5_tomo", "-t",
                    str(tomograms), "-p", str(particles), "-o", str(parsed)], check=True,
                   capture_output=True,
                   env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    theirs = read_particles_star(parsed)
    ours = ts.tilt_particle_table(sim)
    key = ["rlnGroupName", "rlnImageName"]
    a = ours.sort_values(key).reset_index(drop=True)
    b = theirs.particles.sort_values(key).reset_index(drop=True)
    assert list(a["rlnImageName"]) == list(b["rlnImageName"])
    for column in ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnMicrographPreExposure",
                   "rlnCtfScalefactor"):
        np.testing.assert_allclose(a[column].astype(float), b[column].astype(float), atol=1e-3)
    matrices = [Rotation.from_euler("ZYZ", t[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]]
                                    .to_numpy(float), degrees=True).as_matrix() for t in (a, b)]
    np.testing.assert_allclose(matrices[0], matrices[1], atol=1e-5)
    # Both give RECOVAR the same poses and CTF.
    for table, name in ((merge_optics(a, sim.optics()), "ours"),
                        (merge_optics(b, theirs.optics), "theirs")):
        cryodrgn.write_recovar_inputs(table, tmp_path / name, PIXEL, BOX,
                                      image_root=tmp_path / "relion5", tilt_series=True)
    np.testing.assert_allclose(cryodrgn.read_ctf_pkl(tmp_path / "ours" / cryodrgn.CTF_PKL),
                               cryodrgn.read_ctf_pkl(tmp_path / "theirs" / cryodrgn.CTF_PKL),
                               atol=1e-2)
    units = [cryodrgn.read_tilt_units(tmp_path / n / cryodrgn.TILT_UNITS_CSV)
             for n in ("ours", "theirs")]
    np.testing.assert_array_equal(units[0], units[1])
