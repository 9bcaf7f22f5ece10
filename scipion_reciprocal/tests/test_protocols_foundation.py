"""Foundation protocols in a real Scipion project, launched through Scipion's launch path.

Runs under pytest and with ``python -m scipion tests scipion_reciprocal.tests.test_protocols_foundation``.
"""
import os
import tempfile
from pathlib import Path

import numpy as np
import starfile
from pwem.protocols import ProtImportVolumes
from pyworkflow.tests import BaseTest, setupTestProject

from scipion_reciprocal import Plugin
from scipion_reciprocal.environments import BACKENDS
from scipion_reciprocal.formats.mrc import read_map
from scipion_reciprocal.formats.star import read_particles_star, write_particles_star
from scipion_reciprocal.protocols import ProtBackendCheck, ProtExportParticlesStar
from scipion_reciprocal.protocols.protocol_backend_check import BACKEND_NAMES
from scipion_reciprocal.simulate.molecule import molecule_maps
from scipion_reciprocal.simulate.particles import simulate_particles, write_particle_dataset
from scipion_reciprocal.workflows.wiring import connect, relion_particles_import

PIXEL_SIZE = 4.0


def _write_dataset(folder, n_particles=40):
    maps = molecule_maps(n_states=2, box=32, pixel_size=PIXEL_SIZE, seed=3)
    sim = simulate_particles(maps, n_particles=n_particles, pixel_size=PIXEL_SIZE, seed=4)
    star = write_particle_dataset(folder, sim)
    return maps, sim, Path(star)


class TestFoundationProtocols(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.dataDir = Path(tempfile.mkdtemp(prefix="reciprocal-foundation-"))
        cls.maps, cls.sim, cls.star = _write_dataset(cls.dataDir)
        cls.importedParticles = cls._importParticles(cls.star, "simulated particles")

    @classmethod
    def _importParticles(cls, star, label):
        prot = relion_particles_import(cls.proj, star, PIXEL_SIZE)
        prot.setObjLabel(label)
        cls.launchProtocol(prot)
        return prot

    def _newExport(self, importProt):
        export = self.newProtocol(ProtExportParticlesStar)
        connect(export.inputParticles, importProt, "outputParticles")
        return export

    def test_simulated_data_read_back_with_pwem_importers(self):
        particles = self.importedParticles.outputParticles
        self.assertEqual(particles.getSize(), 40)
        self.assertTrue(particles.hasCTF())
        self.assertTrue(particles.hasAlignmentProj())
        self.assertAlmostEqual(particles.getSamplingRate(), PIXEL_SIZE)
        self.assertEqual(particles.getDimensions()[:2], (32, 32))
        mapFile = self.dataDir / "state_0.mrc"
        from scipion_reciprocal.formats.mrc import write_map
        write_map(mapFile, self.maps[0], PIXEL_SIZE)
        vols = self.newProtocol(ProtImportVolumes, filesPath=str(mapFile), samplingRate=PIXEL_SIZE)
        self.launchProtocol(vols)
        volume = vols.outputVolume
        self.assertEqual(volume.getDim(), (32, 32, 32))
        data, voxel = read_map(volume.getFileName())
        np.testing.assert_allclose(data, self.maps[0], atol=1e-6)
        self.assertAlmostEqual(voxel, PIXEL_SIZE)

    def test_export_round_trip_keeps_ctf_and_alignment(self):
        export = self._newExport(self.importedParticles)
        self.launchProtocol(export)
        star = Path(export.starFile.get())
        self.assertTrue(star.exists())
        written = starfile.read(star, always_dict=True)
        self.assertEqual(list(written)[:2], ["optics", "particles"])
        self.assertEqual(len(written["particles"]), 40)
        self.assertEqual(written["optics"]["rlnImagePixelSize"].tolist(), [PIXEL_SIZE])
        source = read_particles_star(self.star).particles
        out = written["particles"]
        for column in ("rlnDefocusU", "rlnDefocusV", "rlnOriginXAngst", "rlnOriginYAngst"):
            np.testing.assert_allclose(out[column], source[column], atol=1e-3, err_msg=column)
        # The same orientations (Euler triplets can differ at equal rotation; compare matrices).
        from scipion_reciprocal.core.geometry import relion_euler_to_matrix
        cols = ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]
        np.testing.assert_allclose(relion_euler_to_matrix(*out[cols].to_numpy().T),
                                   relion_euler_to_matrix(*source[cols].to_numpy().T), atol=1e-4)
        # Image names are valid from the STAR file's folder (the RELION project directory).
        index, path = out["rlnImageName"].iloc[7].split("@")
        self.assertEqual(int(index), 8)
        self.assertTrue((star.parent / path).exists())

    def test_export_without_ctf_is_refused_in_validate(self):
        table = read_particles_star(self.star)
        noCtf = table.particles.drop(columns=[c for c in table.particles if "Defocus" in c
                                              or c == "rlnPhaseShift"])
        star = self.dataDir / "Extract" / "job007" / "no_ctf.star"
        write_particles_star(star, noCtf, table.optics)
        importProt = self._importParticles(star, "particles without CTF")
        self.assertFalse(importProt.outputParticles.hasCTF())
        export = self._newExport(importProt)
        errors = export.validate()
        self.assertTrue(any("has no CTF information" in e and "particles without CTF" in e
                            for e in errors), errors)
        with self.assertRaises(Exception):
            self.launchProtocol(export)
        self.assertTrue(export.isFailed())
        self.assertFalse(export.starFile.hasValue())
        self.assertFalse(os.path.exists(export._getExtraPath("particles.star")))

    def test_export_with_missing_stack_fails_and_registers_nothing(self):
        folder = Path(tempfile.mkdtemp(prefix="reciprocal-missing-"))
        _, _, star = _write_dataset(folder, n_particles=10)
        importProt = self._importParticles(star, "particles to break")
        stack = Path(importProt.outputParticles.getFirstItem().getFileName())
        os.remove(stack if stack.is_absolute() else Path(self.proj.getPath()) / stack)
        export = self._newExport(importProt)
        with self.assertRaises(Exception):
            self.launchProtocol(export)
        export = self.proj.getProtocol(export.getObjId())
        self.assertTrue(export.isFailed())
        self.assertIn("does not exist", export.getErrorMessage())
        self.assertFalse(export.starFile.hasValue())
        self.assertFalse(os.path.exists(export._getExtraPath("particles.star")))

    def test_backend_check_reports_versions(self):
        ran = 0
        for name in BACKEND_NAMES:
            if Plugin.validateBackend(name):
                continue  # not installed here: test_missing_backend covers the refusal
            # The backend sees the GPUs Scipion assigns to the step (here the form's).
            check = self.newProtocol(ProtBackendCheck, backend=BACKEND_NAMES.index(name),
                                     gpuList="1")
            self.launchProtocol(check)
            summary = check.summaryVar.get()
            self.assertIn(BACKENDS[name].version, summary)
            self.assertIn("CPU", summary.upper())
            self.assertTrue(summary.endswith("(CUDA_VISIBLE_DEVICES=1)"), summary)
            ran += 1
        if not ran:
            self.skipTest("no backend environment installed")
        # A CPU run hides every GPU.
        check = self.newProtocol(ProtBackendCheck, backend=BACKEND_NAMES.index(name),
                                 useGpu=False)
        self.launchProtocol(check)
        self.assertTrue(check.summaryVar.get().endswith("(CUDA_VISIBLE_DEVICES=)"),
                        check.summaryVar.get())

    def test_missing_backend_is_refused_with_install_command(self):
        backend = BACKENDS["recovar"]
        previous = Plugin.getVar(backend.activation_var)
        broken = "export PATH=/nonexistent/bin:$PATH && false"
        Plugin._vars[backend.activation_var] = broken
        os.environ[backend.activation_var] = broken  # the protocol process reads it too
        try:
            check = self.newProtocol(ProtBackendCheck, backend=BACKEND_NAMES.index("recovar"))
            errors = check.validate()
            self.assertTrue(any("python -m scipion installb recovar" in e for e in errors), errors)
            with self.assertRaises(Exception):
                self.launchProtocol(check)
            check = self.proj.getProtocol(check.getObjId())
            self.assertTrue(check.isFailed())
            self.assertIn("installb recovar", check.getErrorMessage())
        finally:
            Plugin._vars[backend.activation_var] = previous
            os.environ.pop(backend.activation_var, None)
