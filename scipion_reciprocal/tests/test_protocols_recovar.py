"""RECOVAR protocols in a real Scipion project with the real RECOVAR 1.0.5 environment (CPU).

Two simulated conformations, 300 particles of 24 px (the CPU recipe measured in
``docs/recovar-1.0.5.md``: the pipeline is about 3 CPU-minutes, analyze without centre volumes
seconds), imported from RELION; then 'recovar pipeline' (zdim 2, sphere mask), 'recovar
analyze' (2 clusters, no centre volumes, no UMAP), 'recovar extract subsets' and the
reciprocal analysis of the k-means classes against the true-state classification. Skips when
the RECOVAR environment is not installed. Runs under pytest and with
``python -m scipion tests scipion_reciprocal.tests.test_protocols_recovar``.
"""
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from pwem.protocols import ProtImportParticles
from pyworkflow.tests import BaseTest, setupTestProject
from scipy import ndimage
from sklearn.metrics import adjusted_rand_score

from scipion_reciprocal import Plugin
from scipion_reciprocal.convert.set_tables import read_class_items, read_set_items
from scipion_reciprocal.formats.mrc import read_map
from scipion_reciprocal.formats.star import read_particles_star
from scipion_reciprocal.protocols import (ProtImportRelionClassifications, ProtReciprocalAnalysis,
                                          ProtRecovarAnalyze, ProtRecovarPipeline,
                                          ProtRecovarSubsets)
from scipion_reciprocal.protocols.protocol_recovar_pipeline import latentAttribute
from scipion_reciprocal.simulate.molecule import molecule_maps
from scipion_reciprocal.simulate.particles import (particle_table, simulate_particles,
                                                   write_particle_dataset)
from scipion_reciprocal.simulate.relion_jobs import write_classification_job
from scipion_reciprocal.viewers import RecovarAnalyzeViewer, RecovarPipelineViewer
from scipion_reciprocal.workflows.wiring import connect_many

BOX, PIXEL, N_PARTICLES, SNR, SEED, ZDIM = 24, 4.0, 300, 1.0, 1, 2
TRUTH_JOB = "Class3D/job090"
#: Both maps are low-passed to this resolution (Å; Nyquist is 8 Å) before correlating.
COMPARE_RESOLUTION = 16.0
#: RECOVAR 1.0.5 magnifies the CPU mean 2x about the box centre (its JAX back-projection does
#: not scale frequencies on the 2x-upsampled grid; see docs/recovar-1.0.5.md). The mean is
#: compared with the truth magnified by this factor; set to 1 once RECOVAR fixes it.
CPU_MEAN_MAGNIFICATION = 2.0
#: Measured ARI 0.90-0.92 at these sizes (docs/recovar-1.0.5.md); chance is 0. For two
#: balanced classes ARI ~ (1 - 2e)^2 with e the misassigned fraction: 0.7 asks for ~92 % of
#: the particles in the right class, ~0.2 below every run measured.
MIN_ARI = 0.7


def _lowpass(volume, resolution, pixel_size):
    f = np.fft.fftfreq(volume.shape[0], d=pixel_size)
    radius = np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + f[None, None, :] ** 2)
    return np.real(np.fft.ifftn(np.fft.fftn(volume) * (radius <= 1.0 / resolution)))


def _magnify(volume, factor):
    centre = np.full(3, volume.shape[0] // 2, dtype=float)
    return ndimage.affine_transform(volume, np.eye(3) / factor, offset=centre - centre / factor,
                                    order=3)


class TestRecovarProtocols(BaseTest):
    @classmethod
    def setUpClass(cls):
        cls.missing = Plugin.validateBackend("recovar")
        if cls.missing:
            return
        setupTestProject(cls)
        relion = Path(tempfile.mkdtemp(prefix="reciprocal-recovar-")) / "relion"
        cls.maps = molecule_maps(n_states=2, box=BOX, pixel_size=PIXEL, seed=0)
        cls.sim = simulate_particles(cls.maps, n_particles=N_PARTICLES, pixel_size=PIXEL,
                                     snr=SNR, seed=SEED)
        star = write_particle_dataset(relion, cls.sim)
        write_classification_job(relion, TRUTH_JOB, particle_table(cls.sim), cls.sim.states + 1,
                                 n_iterations=1, class_maps=cls.maps, pixel_size=PIXEL)
        cls.truthImport = cls.newProtocol(ProtImportRelionClassifications, relionDir=str(relion),
                                          jobs=TRUTH_JOB)
        cls.launchProtocol(cls.truthImport)
        cls.particles = cls.newProtocol(
            ProtImportParticles, importFrom=ProtImportParticles.IMPORT_FROM_RELION,
            starFile=str(star), samplingRate=PIXEL, magnification=50000, voltage=300.0,
            sphericalAberration=2.7, amplitudeContrast=0.1, haveDataBeenPhaseFlipped=False)
        cls.launchProtocol(cls.particles)

        cls.pipeline = cls.newProtocol(ProtRecovarPipeline, maskType=2, zdims=str(ZDIM),
                                       uninvertData=1)
        cls.pipeline.inputParticles.set(cls.particles)
        cls.pipeline.inputParticles.setExtended("outputParticles")
        cls.launchProtocol(cls.pipeline)
        cls.analyze = cls.newProtocol(ProtRecovarAnalyze, zdim=ZDIM, nClusters=2,
                                      computeCenters=False, umap=False, nTrajectories=0)
        cls.analyze.inputPipeline.set(cls.pipeline)
        cls.launchProtocol(cls.analyze)

    def setUp(self):
        if self.missing:
            self.skipTest(self.missing[0])

    def _trueStates(self, items):
        """True state of each item row, from its image index in the simulated stack."""
        return self.sim.states[items["_index"].astype(int).to_numpy() - 1]

    def test_pipeline_mean_matches_the_true_map(self):
        mean = self.pipeline.outputMean
        self.assertEqual(len(mean.getHalfMaps().split(",")), 2)
        volume, voxel = read_map(mean.getFileName())
        self.assertEqual(volume.shape, (BOX,) * 3)
        self.assertAlmostEqual(voxel, PIXEL, places=3)
        weights = np.bincount(self.sim.states, minlength=2) / N_PARTICLES
        truth = _magnify(np.tensordot(weights, self.maps, axes=1), CPU_MEAN_MAGNIFICATION)
        cc = np.corrcoef(_lowpass(volume, COMPARE_RESOLUTION, PIXEL).ravel(),
                         _lowpass(truth, COMPARE_RESOLUTION, PIXEL).ravel())[0, 1]
        print("\nmean vs truth (x%g) at %g A: %.3f" % (CPU_MEAN_MAGNIFICATION, COMPARE_RESOLUTION, cc))
        self.assertGreater(cc, 0.9)
        self.assertGreaterEqual(self.pipeline.outputEigenvolumes.getSize(), ZDIM)
        self.assertGreaterEqual(self.pipeline.outputVariances.getSize(), 1)
        viewer = RecovarPipelineViewer(project=self.proj, protocol=self.pipeline)
        viewer.setProtocol(self.pipeline)
        self.assertEqual(viewer.plotNames(), ["eigenvalues", "mean_fsc", "latent_zdim%d" % ZDIM])

    def test_pipeline_particles_carry_latent_coordinates(self):
        out = self.pipeline.outputParticles
        self.assertEqual(out.getSize(), N_PARTICLES)
        self.assertTrue(out.hasCTF() and out.hasAlignmentProj())
        items = read_set_items(out.getFileName())
        for regularized in (True, False):
            column = latentAttribute(ZDIM, regularized)
            coords = np.array([[float(v) for v in s.split(",")] for s in items[column]])
            self.assertEqual(coords.shape, (N_PARTICLES, ZDIM))
            self.assertTrue(np.isfinite(coords).all())
        # Same particles, same metadata as the input.
        source = read_set_items(self.particles.outputParticles.getFileName())
        pd.testing.assert_series_equal(items["_ctfModel._defocusU"], source["_ctfModel._defocusU"])
        np.testing.assert_array_equal(items["id"], source["id"])

    def test_kmeans_classes_separate_the_states(self):
        classes = self.analyze.outputClasses
        items = read_class_items(classes.getFileName(), ["_index", "_filename"])
        self.assertEqual(len(items), N_PARTICLES)
        ari = adjusted_rand_score(self._trueStates(items), items["classId"])
        print("\nk-means vs true states: ARI %.3f" % ari)
        self.assertGreaterEqual(ari, MIN_ARI)
        viewer = RecovarAnalyzeViewer(project=self.proj, protocol=self.analyze)
        viewer.setProtocol(self.analyze)
        self.assertEqual(viewer.plotNames(), ["kmeans_latent"])

    def test_subsets_match_the_classes(self):
        sizes = {c.getObjId(): c.getSize() for c in self.analyze.outputClasses}
        for invert, expected in ((False, sizes[1]), (True, sizes[2])):
            subsets = self.newProtocol(ProtRecovarSubsets, clusters="0", invert=invert)
            subsets.inputClasses.set(self.analyze)
            subsets.inputClasses.setExtended("outputClasses")
            self.launchProtocol(subsets)
            out = subsets.outputParticles
            self.assertEqual(out.getSize(), expected)
            self.assertTrue(out.hasCTF() and out.hasAlignmentProj())
            star = read_particles_star(subsets._getExtraPath("star", "particles.star"))
            self.assertEqual(len(star.particles), expected)
            self.assertIn("rlnAngleRot", star.particles)
            image = star.particles["rlnImageName"].iloc[0].split("@")[1]
            self.assertTrue(os.path.exists(subsets._getExtraPath("star", image)))

    def test_reciprocal_analysis_of_kmeans_against_truth(self):
        analysis = self.newProtocol(ProtReciprocalAnalysis, registerSubsets=2)
        connect_many(analysis.inputClassifications, self.truthImport, ["outputClasses_job090"])
        connect_many(analysis.inputClassifications, self.analyze, ["outputClasses"])
        self.launchProtocol(analysis)
        agreement = pd.read_csv(analysis._getExtraPath("results", "agreement.csv"))
        print("\n" + agreement.to_string())
        self.assertEqual(len(agreement), 1)
        ari_column = [c for c in agreement.columns if "ari" in c.lower() or "rand" in c.lower()][0]
        self.assertGreaterEqual(float(agreement[ari_column].iloc[0]), MIN_ARI)
