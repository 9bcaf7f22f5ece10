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
from scipion_reciprocal.convert.set_tables import read_class_items, read_set_items
from scipion_reciprocal.formats.cryosparc import CsParticles
from scipion_reciprocal.formats.star import read_particles_star
from scipion_reciprocal.protocols import (ProtImportCryosparcClassifications,
                                          ProtImportRelionClassifications,
                                          ProtReciprocalAnalysis)
from scipion_reciprocal.simulate.cryosparc import (IMPORT_JOB, JobSpec,
                                                   write_cryosparc_project)
from scipion_reciprocal.simulate.dataset import build_demo_project
from scipion_reciprocal.simulate.relion_jobs import class_average_maps
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
        cls.cs = write_cryosparc_project(root / "P12", root / "relion", star.particles,
                                         star.optics, {
            "J30": JobSpec("hetero_refine", labels, IMPORT_JOB, class_maps=maps),
            "J32": JobSpec("class_2D", cls.demo.labels["Class2D/job008"], IMPORT_JOB)},
            seed=3)
        cls.csImport = cls.newProtocol(ProtImportCryosparcClassifications,
                                       cryosparcDir=str(root / "P12"), jobs="J30")
        cls.launchProtocol(cls.csImport)
        cls.relionImport = cls.newProtocol(ProtImportRelionClassifications,
                                           relionDir=str(root / "relion"), jobs="85")
        cls.launchProtocol(cls.relionImport)
        cls.analysis = cls.newProtocol(ProtReciprocalAnalysis, minOverlap=1, minFraction=0.0,
                                       minGroupSize=1, registerSubsets=2)
        connect_many(cls.analysis.inputClassifications, cls.relionImport,
                     ["outputClasses_job085"])
        connect_many(cls.analysis.inputClassifications, cls.csImport, ["outputClasses_J30"])
        cls.launchProtocol(cls.analysis)

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
