"""RECOVAR's particle cleaning and postprocessing in a real Scipion project with the real
RECOVAR 1.0.5 environment (CPU): 'recovar junk detection', 'recovar pipeline with outliers'
and 'recovar postprocess'.

300 simulated particles of 16 px in two conformations, a fifth of them junk (boxes of noise
alone, with the poses and CTF a refinement would have given them), imported from RELION.
A 'recovar pipeline' (zdim 2) feeds the junk detection (10 clusters, with RECOVAR's
diagnostics) and the postprocess of its mean; 'recovar pipeline with outliers' runs two
rounds on the same particles. Junk and outliers are counted against the truth. Skips when
the RECOVAR environment is not installed.
"""
import tempfile
from pathlib import Path

import numpy as np
from pyworkflow.tests import BaseTest, setupTestProject

from scipion_reciprocal import Plugin
from scipion_reciprocal.convert.set_sql import read_set_items
from scipion_reciprocal.formats import recovar_cleaning as rc
from scipion_reciprocal.formats import recovar_files as rf
from scipion_reciprocal.formats import recovar_provenance
from scipion_reciprocal.formats import recovar_results as rr
from scipion_reciprocal.formats.mrc import read_map
from scipion_reciprocal.formats.result_folder import folder_status
from scipion_reciprocal.protocols import (ProtRecovarJunkDetection, ProtRecovarPipeline,
                                          ProtRecovarPipelineWithOutliers,
                                          ProtRecovarPostprocess)
from scipion_reciprocal.protocols.protocol_recovar_junk import CLUSTER_ATTR
from scipion_reciprocal.protocols.protocol_recovar_pipeline import latentAttribute
from scipion_reciprocal.protocols.protocol_recovar_pipeline_outliers import ROUND_ATTR
from scipion_reciprocal.protocols.protocol_recovar_postprocess import (BFACTOR_ATTR,
                                                                      RESOLUTION_ATTR)
from scipion_reciprocal.simulate.molecule import molecule_maps
from scipion_reciprocal.simulate.particles import (add_junk, simulate_particles,
                                                   write_particle_dataset)
from scipion_reciprocal.tests.test_protocols_recovar import _viewerPlots
from scipion_reciprocal.viewers import (RecovarJunkViewer, RecovarPipelineOutliersViewer,
                                        RecovarPostprocessViewer)
from scipion_reciprocal.workflows.wiring import relion_particles_import

BOX, PIXEL, N_PARTICLES, JUNK_FRACTION, SEED, ZDIM = 16, 6.0, 300, 0.2, 1, 2
#: Pipeline settings of every run here: zdim 2 on a sphere mask, RELION's sign.
PIPELINE = dict(maskType=2, zdims=str(ZDIM), uninvertData=1)


class TestRecovarCleaning(BaseTest):
    @classmethod
    def setUpClass(cls):
        cls.missing = Plugin.validateBackend("recovar")
        if cls.missing:
            return
        setupTestProject(cls)
        folder = Path(tempfile.mkdtemp(prefix="reciprocal-cleaning-"))
        maps = molecule_maps(n_states=2, box=BOX, pixel_size=PIXEL, seed=0)
        clean = simulate_particles(maps, n_particles=N_PARTICLES, pixel_size=PIXEL, snr=1.0,
                                   seed=SEED)
        cls.sim = add_junk(clean, JUNK_FRACTION, seed=SEED)
        star = write_particle_dataset(folder / "relion", cls.sim)
        cls.particles = relion_particles_import(cls.proj, star, PIXEL)
        cls.launchProtocol(cls.particles)
        items = read_set_items(cls.particles.outputParticles.getFileName(), ["_index"])
        truth = cls.sim.states[items["_index"].astype(int).to_numpy() - 1]
        cls.junkIds = set(items["id"][truth < 0].tolist())
        cls.pipeline = cls.newProtocol(ProtRecovarPipeline, **PIPELINE)
        cls.pipeline.inputParticles.set(cls.particles)
        cls.pipeline.inputParticles.setExtended("outputParticles")
        cls.launchProtocol(cls.pipeline)

    def setUp(self):
        if self.missing:
            self.skipTest(self.missing[0])

    def _ids(self, particles):
        return set(read_set_items(particles.getFileName(), [])["id"].tolist())

    def _provenance(self, prot, commands):
        """The protocol's provenance runs, checked to be ``commands`` through the launcher."""
        runs = recovar_provenance.read_provenance(prot._getExtraPath(rf.PROVENANCE))["runs"]
        self.assertEqual([r["command"] for r in runs], commands)
        for run in runs:
            self.assertEqual(run["status"], "completed")
            self.assertEqual(run["versions"]["recovar"], "1.0.5")
            self.assertEqual(run["cpu_correction"]["status"], "installed")
        return runs

    def _plotFiles(self, prot):
        plots = folder_status(prot._getExtraPath(rf.PLOTS), verify=True)
        self.assertTrue(plots, plots.reason)
        return sorted(plots.files)

    def _report(self, name, flagged):
        junk = len(flagged & self.junkIds)
        print("\n%s: %d flagged, %d of them junk (of %d junk; %d particles)"
              % (name, len(flagged), junk, len(self.junkIds), N_PARTICLES))
        return junk

    def test_junk_detection_finds_the_junk(self):
        junk = self.newProtocol(ProtRecovarJunkDetection, zdim=ZDIM, nClusters=10,
                                diagnostics=True)
        junk.inputPipeline.set(self.pipeline)
        self.launchProtocol(junk)
        flagged, clean = self._ids(junk.outputJunk), self._ids(junk.outputClean)
        self.assertEqual(len(flagged) + len(clean), N_PARTICLES)
        self.assertFalse(flagged & clean)
        found = self._report("junk detection", flagged)
        # RECOVAR's decision (adaptive threshold) beats chance: measured 58 flagged, all junk,
        # on this set (34, all junk, before the launcher's CPU back-projection correction).
        self.assertGreaterEqual(found, 0.5 * len(self.junkIds))
        self.assertGreaterEqual(found / len(flagged), 2 * JUNK_FRACTION)
        items = read_set_items(junk.outputJunk.getFileName(), [CLUSTER_ATTR,
                                                               latentAttribute(ZDIM)])
        self.assertTrue((items[CLUSTER_ATTR] >= 0).all() and (items[CLUSTER_ATTR] < 10).all())
        self.assertTrue(junk.outputJunk.hasCTF() and junk.outputJunk.hasAlignmentProj())
        # Its scores: clusters of junk reconstruct worse than every cluster of particles.
        result = junk.readResult()
        table = result.clusters
        self.assertEqual(len(table), 10)
        self.assertEqual(int(table["size"].sum()), N_PARTICLES)
        isJunk = np.isin(self.pipeline.idMap(), list(self.junkIds))
        share = np.array([isJunk[result.labels == k].mean() for k in table["cluster"]])
        print("junk share per cluster: %s; half-map resolution (A): %s"
              % (np.round(share, 2), np.round(table["halfmap_resolution"].to_numpy(), 1)))
        resolution = table["halfmap_resolution"].to_numpy()
        self.assertTrue((share >= 0.8).any() and (share <= 0.2).any())
        self.assertGreater(resolution[share >= 0.8].min(), resolution[share <= 0.2].max())
        self.assertEqual(_viewerPlots(RecovarJunkViewer, self.proj, junk),
                         ["junk_latent", "junk_clusters"])
        self.assertEqual(self._plotFiles(junk), ["junk_clusters.png", "junk_latent.png"])
        run, = self._provenance(junk, ["junk_particle_detection"])
        params = rr.read_params(self.pipeline.pipelineDir())
        self.assertEqual(run["principal_components"]["kept"], len(params["s"]))

    def test_pipeline_with_outliers_removes_the_junk(self):
        rounds = self.newProtocol(ProtRecovarPipelineWithOutliers, kRounds=2, **PIPELINE)
        rounds.inputParticles.set(self.particles)
        rounds.inputParticles.setExtended("outputParticles")
        self.launchProtocol(rounds)
        kept, removed = self._ids(rounds.outputParticles), self._ids(rounds.outputOutliers)
        self.assertEqual(len(kept) + len(removed), N_PARTICLES)
        self.assertFalse(kept & removed)
        found = self._report("pipeline with outliers", removed)
        # Measured: 93 removed in two rounds, all 60 junk among them; none left.
        self.assertGreaterEqual(found, 0.8 * len(self.junkIds))
        self.assertLess(len(kept & self.junkIds), 0.05 * len(kept))
        history = rc.read_outlier_rounds(rounds.outliersDir(), N_PARTICLES)
        self.assertEqual(history.rounds, [1, 2])
        self.assertTrue(all(n > 0 for n in history.removed_per_round()))
        self.assertEqual(rounds.pipelineDir(), str(Path(rounds.outliersDir()) / "round_2"))
        items = read_set_items(rounds.outputOutliers.getFileName(), [ROUND_ATTR])
        self.assertEqual(sorted(np.bincount(items[ROUND_ATTR], minlength=3)[1:].tolist()),
                         sorted(history.removed_per_round()))
        coords = read_set_items(rounds.outputParticles.getFileName(), [latentAttribute(ZDIM)])
        values = np.array([[float(v) for v in s.split(",")] for s in coords[latentAttribute(ZDIM)]])
        self.assertEqual(values.shape, (len(kept), ZDIM))
        self.assertTrue(np.isfinite(values).all())
        self.assertEqual(len(rounds.outputMean.getHalfMaps().split(",")), 2)
        self.assertEqual(_viewerPlots(RecovarPipelineOutliersViewer, self.proj, rounds)[:2],
                         ["outlier_rounds", "outliers_latent"])
        self.assertEqual(self._plotFiles(rounds),
                         ["eigenvalues.png", "latent_zdim%d.png" % ZDIM, "mean_fsc.png",
                          "outlier_rounds.png", "outliers_latent.png"])
        # Planned as pipeline_with_outliers (the form's 'automatic'); the principal
        # components recorded are the last round's.
        run, = self._provenance(rounds, ["pipeline_with_outliers"])
        self.assertTrue(run["memory"]["plan"]["automatic"])
        self.assertIn("--accept-cpu", run["arguments"])
        self.assertGreaterEqual(run["cpu_correction"]["corrected_calls"], 1)
        self.assertEqual(run["principal_components"]["kept"],
                         len(rr.read_params(rounds.pipelineDir())["s"]))

    def _postprocess(self, output="outputMean", **kwargs):
        post = self.newProtocol(ProtRecovarPostprocess, **kwargs)
        post.inputVolumes.set(self.pipeline)
        post.inputVolumes.setExtended(output)
        return post

    def test_postprocess_of_the_mean_sharpens_in_angstrom_units(self):
        given = self._postprocess(bfactorMode=2, bfactor=1000.0)
        estimated = self._postprocess(bfactorMode=1)
        for post in (given, estimated):
            self.launchProtocol(post)
        (a, voxel), (b, _) = [read_map(p.outputVolume.getFileName()) for p in (given, estimated)]
        self.assertEqual(a.shape, (BOX,) * 3)
        self.assertAlmostEqual(voxel, PIXEL, places=3)
        resolution = getattr(given.outputVolume, RESOLUTION_ATTR).get()
        bfactors = [getattr(p.outputVolume, BFACTOR_ATTR).get() for p in (given, estimated)]
        print("\npostprocess of the mean: %.2f A; B-factors %.1f (given) and %.1f (estimated) "
              "A^2" % (resolution, *bfactors))
        # Between Nyquist (12 A) and the box (96 A): the half maps agree at low resolution.
        self.assertGreaterEqual(resolution, 2 * PIXEL - 1e-6)
        self.assertLess(resolution, BOX * PIXEL / 2)
        self.assertAlmostEqual(getattr(estimated.outputVolume, RESOLUTION_ATTR).get(),
                               resolution, 2)
        self.assertEqual(bfactors[0], 1000.0)
        self.assertGreater(bfactors[1], 0)  # the half maps' amplitudes fall off
        self.assertIn("global resolution %.2f A, B-factor 1000.0 A^2" % resolution,
                      given.summary()[0])
        # Same half maps, same FSC filter: the maps differ by exp((B2 - B1) s^2 / 4), s in 1/A.
        ratio, expected = _amplitude_ratio(b, a, PIXEL, bfactors[1] - bfactors[0])
        print("amplitude ratio per shell: %s; expected %s" % (np.round(ratio, 3),
                                                              np.round(expected, 3)))
        np.testing.assert_allclose(ratio, expected, rtol=0.02)
        self.assertTrue(np.isfinite(b).all())
        self.assertEqual(given.outputVolume.getHalfMaps(), self.pipeline.outputMean.getHalfMaps())
        self.assertEqual(_viewerPlots(RecovarPostprocessViewer, self.proj, estimated),
                         ["fsc", "bfactor_vol000"])
        self.assertEqual(self._plotFiles(estimated), ["bfactor_vol000.png", "fsc.png"])
        # The estimate, then the map sharpened by it; the given B-factor in one run.
        self._provenance(estimated, ["postprocess", "postprocess"])
        self._provenance(given, ["postprocess"])

    def test_postprocess_needs_half_maps(self):
        post = self._postprocess("outputEigenvolumes")
        errors = post.validate()
        self.assertTrue(any("has no half maps" in e for e in errors), errors)


def _amplitude_ratio(a, b, pixel, delta_b, shells=(1, 2, 3)):
    """Mean |FT(a)| / |FT(b)| in Fourier shells (cycles/box) and exp(delta_b s^2 / 4) there."""
    k = np.fft.fftfreq(a.shape[0])
    radius = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)
    fa, fb = np.abs(np.fft.fftn(a)), np.abs(np.fft.fftn(b))
    ratio, expected = [], []
    for shell in shells:
        inside = np.abs(radius * a.shape[0] - shell) < 0.5
        inside &= fb > 1e-3 * fb.max()
        ratio.append(np.median(fa[inside] / fb[inside]))
        expected.append(np.exp(delta_b * np.median(radius[inside] / pixel) ** 2 / 4))
    return np.array(ratio), np.array(expected)
