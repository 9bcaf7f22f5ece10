"""Cryo-ET tilt series through 'recovar pipeline' in a real Scipion project with the real
RECOVAR 1.0.5 environment (CPU).

Simulated tomograms of particles in two conformations: each particle seen in several tilt
images (dose-symmetric scheme, dose filter, cosine scale, defocus varying with the particle's
depth in the tilted plane), written as a RELION 5 tomography project. The pipeline converts it
with RECOVAR's parse_relion5_tomo and runs in tilt-series mode; 'recovar analyze' splits the
particles into two k-means classes, which must recover the conformations. Tilt images without
their dose or tilt are refused before running, for every input form. The RECOVAR runs skip
when its environment is not installed; the refusals run without it.
"""
import tempfile
from pathlib import Path

from pyworkflow.tests import BaseTest, setupTestProject
from sklearn.metrics import adjusted_rand_score

from scipion_reciprocal import Plugin
from scipion_reciprocal.convert.set_sql import read_class_items, read_set_items
from scipion_reciprocal.formats import recovar_files as rf
from scipion_reciprocal.formats import recovar_provenance
from scipion_reciprocal.formats.star import read_particles_star, write_particles_star
from scipion_reciprocal.protocols import ProtRecovarAnalyze, ProtRecovarPipeline
from scipion_reciprocal.protocols.protocol_recovar_pipeline import latentAttribute
from scipion_reciprocal.protocols.recovar_tilt import (INPUT_RELION5, INPUT_TILT_STAR,
                                                       TILT_CTF_DOSE_SYMMETRIC, TILT_CTF_WARP)
from scipion_reciprocal.simulate import tilt_series as ts
from scipion_reciprocal.simulate.molecule import molecule_maps
from scipion_reciprocal.tests.test_protocols_recovar import _viewerPlots
from scipion_reciprocal.viewers import RecovarAnalyzeViewer, RecovarPipelineViewer
from scipion_reciprocal.workflows.wiring import connect, relion_particles_import

BOX, PIXEL, N_PARTICLES, N_TILTS, SNR, ZDIM = 16, 6.0, 100, 5, 0.5, 2
#: Chance is 0; two balanced classes with 5 % of the particles misassigned give ~0.81.
MIN_ARI = 0.8


class TestRecovarTiltSeries(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.root = Path(tempfile.mkdtemp(prefix="reciprocal-tilt-"))
        maps = molecule_maps(n_states=2, box=BOX, pixel_size=PIXEL, seed=0)
        cls.sim = ts.simulate_tilt_series(maps, n_particles=N_PARTICLES, n_tilts=N_TILTS,
                                          snr=SNR, pixel_size=PIXEL, seed=1)
        cls.tomograms, cls.tomoParticles = ts.write_relion5_project(cls.root / "relion5",
                                                                    cls.sim)
        cls.warpStar = ts.write_tilt_particle_star(cls.root / "warp", cls.sim, ts.CTF_WARP)

    def _tiltStarPipeline(self, star, **kwargs):
        prot = self.newProtocol(ProtRecovarPipeline, inputType=INPUT_TILT_STAR,
                                tiltStar=str(star), zdims=str(ZDIM), maskType=2, **kwargs)
        return prot

    def _assertError(self, prot, *fragments):
        errors = prot.validate()
        self.assertTrue(any(all(f in e for f in fragments) for e in errors),
                        "%s not in %s" % (fragments, errors))

    def _variant(self, name, drop):
        document = read_particles_star(self.warpStar)
        path = self.warpStar.with_name(name)
        write_particles_star(path, document.particles.drop(columns=list(drop)), document.optics)
        return path

    def test_tilt_images_without_dose_or_tilt_are_refused(self):
        # A Warp STAR holds the dose as rlnCtfBfactor: the RELION 5 model has no dose.
        self._assertError(self._tiltStarPipeline(self.warpStar), "rlnMicrographPreExposure",
                          "'relion5' tilt CTF model", "dose")
        self.assertFalse([e for e in self._tiltStarPipeline(self.warpStar, tiltCtf=TILT_CTF_WARP)
                          .validate() if "tilt" in e.lower()])
        noScale = self._variant("no_scale.star", ["rlnCtfScalefactor"])
        self._assertError(self._tiltStarPipeline(noScale, tiltCtf=TILT_CTF_WARP),
                          "rlnCtfScalefactor", "tilt")
        noGroup = self._variant("no_group.star", ["rlnGroupName"])
        self._assertError(self._tiltStarPipeline(noGroup, tiltCtf=TILT_CTF_WARP),
                          "rlnGroupName")
        self._assertError(self._tiltStarPipeline(self.warpStar, tiltCtf=TILT_CTF_DOSE_SYMMETRIC,
                                                 dosePerTilt=3.0),
                          "Angle per tilt must be positive")
        # The same file imported as Scipion particles: the import keeps _rlnCtfBfactor,
        # _rlnCtfScalefactor and _rlnGroupName.
        imported = relion_particles_import(self.proj, self.warpStar, PIXEL)
        self.launchProtocol(imported)
        prot = self.newProtocol(ProtRecovarPipeline, tiltSeries=True, zdims="2")
        connect(prot.inputParticles, imported, "outputParticles")
        self._assertError(prot, "outputParticles of", "rlnMicrographPreExposure", "dose")
        prot.tiltCtf.set(TILT_CTF_WARP)
        self.assertFalse([e for e in prot.validate() if "tilt" in e.lower()])
        relion5 = self.newProtocol(ProtRecovarPipeline, inputType=INPUT_RELION5,
                                   tomogramsStar=str(self.tomograms),
                                   tomoParticlesStar=str(self.warpStar), zdims="2")
        self._assertError(relion5, "rlnCenteredCoordinateXAngst")

    def test_missing_tilt_stack_fails_with_no_output(self):
        missing = Plugin.validateBackend("recovar")
        if missing:
            self.skipTest(missing[0])
        document = read_particles_star(self.warpStar)
        broken = self.root / "broken" / "particles.star"
        broken.parent.mkdir()
        write_particles_star(broken, document.particles, document.optics)
        prot = self._tiltStarPipeline(broken, tiltCtf=TILT_CTF_WARP)
        with self.assertRaises(Exception):
            self.launchProtocol(prot)
        prot = self.proj.getProtocol(prot.getObjId())
        self.assertTrue(prot.isFailed())
        self.assertIn("1_stack2d.mrcs", prot.getErrorMessage())
        for name in ProtRecovarPipeline._possibleOutputs:
            self.assertFalse(hasattr(prot, name), name)

    def test_relion5_tilt_series_separate_two_states(self):
        missing = Plugin.validateBackend("recovar")
        if missing:
            self.skipTest(missing[0])
        pipeline = self.newProtocol(ProtRecovarPipeline, inputType=INPUT_RELION5,
                                    tomogramsStar=str(self.tomograms),
                                    tomoParticlesStar=str(self.tomoParticles),
                                    zdims=str(ZDIM), maskType=2, uninvertData=1)
        self.launchProtocol(pipeline)
        self.assertEqual(pipeline.unitCount(), N_PARTICLES)
        out = pipeline.outputParticles
        self.assertEqual(out.getSize(), N_PARTICLES * N_TILTS)
        self.assertTrue(out.hasCTF() and out.hasAlignmentProj())
        items = read_set_items(out.getFileName(), ["_rlnGroupName", "_rlnMicrographPreExposure",
                                                   latentAttribute(ZDIM)])
        # Every tilt image carries its particle's latent point; every tilt its dose.
        per_group = items.groupby("_rlnGroupName")[latentAttribute(ZDIM)].nunique()
        self.assertEqual(len(per_group), N_PARTICLES)
        self.assertTrue((per_group == 1).all())
        self.assertEqual(sorted(items["_rlnMicrographPreExposure"].unique().tolist()),
                         sorted(self.sim.pre_exposure.tolist()))
        self.assertEqual(_viewerPlots(RecovarPipelineViewer, self.proj, pipeline),
                         ["eigenvalues", "mean_fsc", "latent_zdim%d" % ZDIM])
        # Through the launcher, planned for the tilt images read from the project.
        run, = recovar_provenance.read_provenance(pipeline._getExtraPath(rf.PROVENANCE))["runs"]
        self.assertEqual(run["command"], "pipeline")
        self.assertTrue(run["memory"]["plan"]["automatic"])
        request = pipeline.memoryRequest()
        self.assertEqual((request.command, request.n_particles, request.box),
                         ("pipeline", N_PARTICLES * N_TILTS, BOX))
        self.assertEqual(run["arguments"][run["arguments"].index("--tilt-series-ctf") + 1],
                         "relion5")

        analyze = self.newProtocol(ProtRecovarAnalyze, zdim=ZDIM, nClusters=2,
                                   computeCenters=False, umap=False, nTrajectories=0)
        analyze.inputPipeline.set(pipeline)
        self.launchProtocol(analyze)
        members = read_class_items(analyze.outputClasses.getFileName(), ["_rlnGroupName"])
        self.assertEqual(len(members), N_PARTICLES * N_TILTS)
        # Tilt images of one particle share a class; the classes are the conformations.
        classes = members.groupby("_rlnGroupName")["classId"].agg(["nunique", "first"])
        self.assertTrue((classes["nunique"] == 1).all())
        names = list(self.sim.particle_names())
        truth = self.sim.states[[names.index(g) for g in classes.index]]
        ari = adjusted_rand_score(truth, classes["first"])
        print("\ntilt series (%d particles x %d tilts, %d px): k-means ARI %.3f"
              % (N_PARTICLES, N_TILTS, BOX, ari))
        self.assertGreaterEqual(ari, MIN_ARI)
        self.assertEqual(_viewerPlots(RecovarAnalyzeViewer, self.proj, analyze),
                         ["kmeans_latent"])
