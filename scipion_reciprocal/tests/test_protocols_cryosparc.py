"""Import of cryoSPARC classifications and their reciprocal analysis against RELION, in a real
Scipion project.

Runs under pytest and with ``python -m scipion tests scipion_reciprocal.tests.test_protocols_cryosparc``.
"""
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import starfile
from pyworkflow.tests import BaseTest, setupTestProject

from scipion_reciprocal.convert.particles import parse_matrices
from scipion_reciprocal.convert.set_sql import read_class_items, read_set_items
from scipion_reciprocal.core.particle_keys import micrograph_stem
from scipion_reciprocal.formats.cryosparc import CsParticles
from scipion_reciprocal.formats.result_folder import folder_status
from scipion_reciprocal.formats.star import read_particles_star
from scipion_reciprocal.protocols import (ProtImportCryosparcClassifications,
                                          ProtImportRelionClassifications,
                                          ProtReciprocalAnalysis)
from scipion_reciprocal.simulate.cryosparc import (EXTRACT_JOB, IMPORT_JOB, JobSpec,
                                                   write_cryosparc_project)
from scipion_reciprocal.simulate.dataset import build_demo_project
from scipion_reciprocal.simulate.relion_jobs import class_average_maps
from scipion_reciprocal.viewers import CryosparcClassificationsViewer
from scipion_reciprocal.workflows.wiring import connect_many

N = 80
ATTRIBUTES = ["_transform._matrix", "_ctfModel._defocusU", "_ctfModel._defocusV",
              "_ctfModel._defocusAngle", "_index", "_filename", "_rlnMaxValueProbDistribution"]


class TestCryosparcProtocols(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        root = Path(tempfile.mkdtemp(prefix="reciprocal-cs-"))
        cls.demo = build_demo_project(root / "relion", seed=9, n_particles=N, n_iterations=2,
                                      n_micrographs=1)
        star = read_particles_star(cls.demo.particles_star)
        labels = cls.demo.labels["Class3D/job085"]
        maps = class_average_maps(cls.demo.maps, cls.demo.true_states, labels, 3)
        other = cls.demo.labels["Class3D/job086"]
        cls.cs = write_cryosparc_project(root / "P12", root / "relion", star.particles,
                                         star.optics, {
            "J30": JobSpec("hetero_refine", labels, IMPORT_JOB, class_maps=maps),
            "J31": JobSpec("class_3D", other, EXTRACT_JOB, class_maps=class_average_maps(
                cls.demo.maps, cls.demo.true_states, other, 4)),
            "J32": JobSpec("class_2D", cls.demo.labels["Class2D/job008"], IMPORT_JOB)},
            seed=3)
        cls.csImport = cls.newProtocol(ProtImportCryosparcClassifications,
                                       cryosparcDir=str(root / "P12"), jobs="J30 J31")
        cls.launchProtocol(cls.csImport)
        cls.relionImport = cls.newProtocol(ProtImportRelionClassifications,
                                           relionDir=str(root / "relion"), jobs="85")
        cls.launchProtocol(cls.relionImport)
        cls.analysis = cls.newProtocol(ProtReciprocalAnalysis, minOverlap=1, minFraction=0.0,
                                       minGroupSize=1, registerSubsets=2, convertToStar=True)
        connect_many(cls.analysis.inputClassifications, cls.relionImport,
                     ["outputClasses_job085"])
        connect_many(cls.analysis.inputClassifications, cls.csImport, ["outputClasses_J30"])
        cls.launchProtocol(cls.analysis)
        # J31's particles were re-extracted: no image in common with RELION's
        cls.byCoordinates = cls.newProtocol(ProtReciprocalAnalysis, matchKey=2, minOverlap=1,
                                            minFraction=0.0, minGroupSize=1, registerSubsets=2)
        connect_many(cls.byCoordinates.inputClassifications, cls.relionImport,
                     ["outputClasses_job085"])
        connect_many(cls.byCoordinates.inputClassifications, cls.csImport,
                     ["outputClasses_J31"])
        cls.launchProtocol(cls.byCoordinates)

    def _results(self, *names):
        return Path(self.analysis._getExtraPath("results", *names))

    def test_import_converts_ctf_and_alignment_to_scipion_conventions(self):
        classes = self.csImport.outputClasses_J30
        self.assertEqual(classes.getSize(), 3)
        particles = classes.getImages()
        self.assertEqual(particles.getSize(), N)
        self.assertTrue(particles.hasCTF() and particles.hasAlignmentProj())
        self.assertAlmostEqual(particles.getSamplingRate(), 4.0)
        order = self.cs.order["J30"]
        sizes = read_class_items(classes.getFileName(), ["_index"]).groupby("classId").size()
        truth = pd.Series(self.demo.labels["Class3D/job085"]).value_counts()
        self.assertEqual(sizes.to_dict(), truth.to_dict())
        # particle r of the .cs file is the RELION import's particle order[r]: same geometry
        cs = read_set_items(particles.getFileName(), ATTRIBUTES).sort_values("id")
        relion = read_set_items(self.relionImport.outputParticles_job085.getFileName(),
                                ATTRIBUTES).sort_values("id").iloc[order]
        np.testing.assert_allclose(parse_matrices(cs["_transform._matrix"]),
                                   parse_matrices(relion["_transform._matrix"]), atol=1e-4)
        for column in ("_ctfModel._defocusU", "_ctfModel._defocusV", "_ctfModel._defocusAngle"):
            np.testing.assert_allclose(cs[column].to_numpy(float),
                                       relion[column].to_numpy(float), rtol=1e-6, atol=1e-3)
        self.assertEqual(cs["_index"].tolist(), relion["_index"].tolist())
        self.assertEqual({os.path.realpath(p) for p in cs["_filename"]},
                         {os.path.realpath(p) for p in relion["_filename"]})
        self.assertTrue(cs["_rlnMaxValueProbDistribution"].between(0.6, 1.0).all())
        for cls in classes:
            self.assertTrue(cls.getRepresentative().getFileName().endswith(
                "_class_%02d_00020_volume.mrc" % (cls.getObjId() - 1)))

    def test_reciprocal_analysis_of_cryosparc_and_relion(self):
        labels = self.demo.labels["Class3D/job085"]
        jobs = pd.read_csv(self._results("jobs.csv")).set_index("job")
        self.assertEqual(jobs.loc["J30", "rows_shared"], N)       # every particle matched
        self.assertEqual(jobs.loc["job085", "rows_shared"], N)
        counts = pd.read_csv(self._results("matrices", "counts_job085_vs_J30.csv"), index_col=0)
        expected = np.diag(np.bincount(labels, minlength=4)[1:])
        np.testing.assert_array_equal(counts.to_numpy(), expected)
        # .cs subsets: the cryoSPARC job's rows of the class, every field, original uids
        particles = CsParticles(*self.cs.files["J30"][:1], [self.cs.files["J30"][1]])
        for k in (1, 2, 3):
            subset = np.load(self._results("per_class", "J30_class%d.cs" % k))
            expected = particles.subset(np.flatnonzero(
                particles.column("alignments3D/class") == k - 1))
            self.assertEqual(subset.tobytes(), expected.tobytes())
            star = starfile.read(self._results("per_class", "J30_class%d.star" % k))
            self.assertEqual(len(star["particles"]), len(subset))
        self.assertFalse(self._results("per_class", "job085_class1.cs").exists())

    def test_imported_coordinates_match_relion_ones(self):
        """Every particle of both cryoSPARC jobs has RELION's micrograph (by stem) and
        position (J30: Y flipped, on micrographs imported from RELION; J31: re-extracted from
        cryoSPARC's motion-corrected micrographs, Y as stored, moved by up to 0.5 px)."""
        columns = ["_coordinate._x", "_coordinate._y", "_coordinate._micName"]
        relion = read_set_items(self.relionImport.outputParticles_job085.getFileName(),
                                columns).sort_values("id")
        for job in ("J30", "J31"):
            cs = read_set_items(getattr(self.csImport, "outputParticles_" + job).getFileName(),
                                columns).sort_values("id")
            truth = relion.iloc[self.cs.order[job]]
            self.assertEqual([micrograph_stem(m) for m in cs["_coordinate._micName"]],
                             [micrograph_stem(m) for m in truth["_coordinate._micName"]])
            self.assertFalse(set(cs["_coordinate._micName"])
                             & set(relion["_coordinate._micName"]))     # named differently
            for axis in ("_coordinate._x", "_coordinate._y"):
                error = np.abs(cs[axis].to_numpy(int) - truth[axis].to_numpy(int))
                self.assertLessEqual(error.max(), 0 if job == "J30" else 1, (job, axis))
        log = open(self.csImport.getStdoutLog()).read()
        self.assertIn("J30: particle Y measured from the bottom (flipped) for %d particles, "
                      "from the top for 0" % N, log)
        self.assertIn("J31: particle Y measured from the bottom (flipped) for 0 particles, "
                      "from the top for %d" % N, log)

    def test_relion_and_reextracted_cryosparc_matched_by_coordinates(self):
        results = Path(self.byCoordinates._getExtraPath("results"))
        jobs = pd.read_csv(results / "jobs.csv").set_index("job")
        self.assertEqual(jobs.loc["job085", "rows_shared"], N)    # every particle matched
        self.assertEqual(jobs.loc["J31", "rows_shared"], N)
        counts = pd.read_csv(results / "matrices" / "counts_job085_vs_J31.csv", index_col=0)
        truth = pd.crosstab(self.demo.labels["Class3D/job085"],
                            self.demo.labels["Class3D/job086"])
        self.assertEqual(counts.shape, (3, 4))
        np.testing.assert_array_equal(counts.to_numpy(), truth.to_numpy())
        self.assertTrue((results / "plots" / "class_slices_J31.png").exists())

    def test_import_summary_for_the_viewer(self):
        """Class sizes, posterior histograms and class maps of every job, as tables and
        plots in a complete folder, which the viewer lists."""
        summary = Path(self.csImport._getExtraPath())
        self.assertTrue(folder_status(summary))
        for job, relionJob, n in (("J30", "Class3D/job085", 3), ("J31", "Class3D/job086", 4)):
            sizes = pd.read_csv(summary / ("class_sizes_%s.csv" % job))
            truth = np.bincount(self.demo.labels[relionJob], minlength=n + 1)[1:]
            self.assertEqual(sizes["class"].tolist(), list(range(1, n + 1)))
            self.assertEqual(sizes["size"].tolist(), truth.tolist())
            posterior = CsParticles(self.cs.files[job][0]).column(
                "alignments3D/class_posterior")
            self.assertAlmostEqual(sizes["mean_confidence"].dot(sizes["size"]),
                                   posterior.astype(float).sum(), places=3)
            histogram = pd.read_csv(summary / ("confidence_%s.csv" % job))
            self.assertEqual(histogram.groupby("class")["count"].sum().tolist(),
                             truth.tolist())
            maps = pd.read_csv(summary / ("class_maps_%s.csv" % job))
            self.assertTrue(maps["exists"].all() and len(maps) == n)
        viewer = CryosparcClassificationsViewer(project=self.proj, protocol=self.csImport)
        self.assertEqual(viewer.plotNames(), [
            "class_sizes_J30", "class_sizes_J31", "confidence_J30", "confidence_J31",
            "class_slices_J30", "class_slices_J31"])

    def test_import_of_a_2d_classification_from_a_cs_file(self):
        prot = self.newProtocol(ProtImportCryosparcClassifications, importFrom=1,
                                csFiles=str(self.cs.files["J32"][0]))
        self.launchProtocol(prot)
        classes = prot.outputClasses_J32
        self.assertEqual(classes.getClassName(), "SetOfClasses2D")
        truth = pd.Series(self.demo.labels["Class2D/job008"]).value_counts().to_dict()
        sizes = read_class_items(classes.getFileName(), ["_index"]).groupby("classId").size()
        self.assertEqual(sizes.to_dict(), truth)
        self.assertTrue(any("J32: %d particles" % N in line for line in prot.summary()))
        sizes = pd.read_csv(prot._getExtraPath("class_sizes_J32.csv"))
        self.assertEqual(sizes.set_index("class")["size"].to_dict(), truth)

    def test_validate_names_the_problem(self):
        prot = self.newProtocol(ProtImportCryosparcClassifications,
                                cryosparcDir=str(self.cs.project_dir), jobs="J30 J1")
        errors = prot.validate()
        self.assertTrue(any("job J1 (import_particles)" in e and "not a classification" in e
                            for e in errors), errors)
        prot = self.newProtocol(ProtImportCryosparcClassifications,
                                cryosparcDir=str(self.cs.project_dir), jobs="J30 J99")
        self.assertTrue(any("J99: folder not found" in e for e in prot.validate()))
        prot = self.newProtocol(ProtImportCryosparcClassifications,
                                cryosparcDir="/nonexistent/P1", jobs="J30")
        self.assertTrue(any("not found" in e for e in prot.validate()))
        citation = " ".join(self.csImport.citations())
        self.assertIn("[[10.1038/nmeth.4169][Punjani et al., Nature Methods, 2017]]", citation)
