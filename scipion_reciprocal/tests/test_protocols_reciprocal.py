"""Import of RELION classifications and the reciprocal analysis, in a real Scipion project.

Runs under pytest and with ``python -m scipion tests scipion_reciprocal.tests.test_protocols_reciprocal``.
"""
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import starfile
from pyworkflow.tests import BaseTest, setupTestProject

from scipion_reciprocal.convert.set_sql import read_class_items, read_set_items
from scipion_reciprocal.core.relion_jobs import find_iteration_file
from scipion_reciprocal.protocols import ProtImportRelionClassifications, ProtReciprocalAnalysis
from scipion_reciprocal.simulate.dataset import build_demo_project
from scipion_reciprocal.tests.realdata import REALDATA
from scipion_reciprocal.tests.test_relion_jobs import write_job
from scipion_reciprocal.viewers import ReciprocalAnalysisViewer, RelionClassificationsViewer
from scipion_reciprocal.workflows.wiring import connect_many


class TestReciprocalProtocols(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.relion = Path(tempfile.mkdtemp(prefix="reciprocal-sim-")) / "relion"
        cls.dataset = build_demo_project(cls.relion, seed=5, n_particles=240)
        cls.imported = cls._import("85,86 Class3D/job087", "simulated classifications")
        cls.analysis = cls._analysis(cls.imported, ["job085", "job086"], minOverlap=5,
                                     minFraction=0.05, minGroupSize=5, registerSubsets=0)

    @classmethod
    def _import(cls, jobs, label, relion=None):
        prot = cls.newProtocol(ProtImportRelionClassifications,
                               relionDir=str(relion or cls.relion), jobs=jobs)
        prot.setObjLabel(label)
        cls.launchProtocol(prot)
        return prot

    @classmethod
    def _analysis(cls, imported, jobs, launch=True, **kwargs):
        prot = cls.newProtocol(ProtReciprocalAnalysis, **kwargs)
        sources = imported if isinstance(imported, list) else [imported] * len(jobs)
        for source, job in zip(sources, jobs):
            connect_many(prot.inputClassifications, source, ["outputClasses_%s" % job])
        if launch:
            cls.launchProtocol(prot)
        return prot

    def _labels(self, job):
        return self.dataset.labels["Class3D/%s" % job]

    def _results(self, *names):
        return Path(self.analysis._getExtraPath("results", *names))

    def test_import_keeps_particles_classes_and_history(self):
        for job, n_classes in (("job085", 3), ("job086", 4), ("job087", 3)):
            classes = getattr(self.imported, "outputClasses_%s" % job)
            self.assertEqual(classes.getSize(), n_classes)
            self.assertEqual(classes.getImages().getSize(), 240)
            self.assertTrue(classes.getImages().hasCTF())
            self.assertTrue(classes.getImages().hasAlignmentProj())
            items = read_class_items(classes.getFileName(), ["_index"])
            sizes = items.groupby("classId").size()
            expected = pd.Series(self._labels(job)).value_counts()
            self.assertEqual(sizes.to_dict(), expected.to_dict())
            # Particle i of the STAR file is image i+1 of the stack, in class labels[i].
            byIndex = items.set_index("_index")["classId"].sort_index()
            np.testing.assert_array_equal(byIndex.to_numpy(), self._labels(job))
            for cls in classes:
                self.assertTrue(os.path.exists(cls.getRepresentative().getFileName()))
        # The continued run (run_ct15_it025) is read at iteration 25.
        history = pd.read_csv(self.imported._getExtraPath("history_job087.csv"))
        self.assertEqual(history["iteration"].max(), 25)
        self.assertTrue(os.path.exists(self.imported._getExtraPath("plots", "convergence_job087.png")))

    def test_count_matrix_equals_ground_truth(self):
        counts = pd.read_csv(self._results("counts_matrix.csv"))
        self.assertEqual(list(counts.columns), ["job1", "job2", "class1", "class2", "value"])
        a, b = self._labels("job085"), self._labels("job086")
        forward = counts[(counts.job1 == 85) & (counts.job2 == 86)]
        self.assertEqual(len(forward), 3 * 4)
        for row in forward.itertuples():
            self.assertEqual(row.value, int(np.sum((a == row.class1) & (b == row.class2))))
        # No pair of classes of the same job.
        self.assertFalse((counts.job1 == counts.job2).any())
        fractions = pd.read_csv(self._results("fraction_matrix.csv"))
        row = fractions[(fractions.job1 == 86) & (fractions.job2 == 85) & (fractions.class1 == 4)
                        & (fractions.class2 == 3)].value.item()
        self.assertAlmostEqual(row, np.sum((b == 4) & (a == 3)) / np.sum(b == 4), places=5)

    def test_agreement_and_consensus_outputs(self):
        from sklearn.metrics import adjusted_rand_score
        agreement = pd.read_csv(self._results("agreement.csv"))
        self.assertAlmostEqual(agreement.adjusted_rand.item(),
                               adjusted_rand_score(self._labels("job085"), self._labels("job086")),
                               places=6)
        groups = pd.read_csv(self._results("consensus_groups.csv"))
        kept = groups[groups.kept.astype(bool)]
        consensus = self.analysis.outputConsensus
        self.assertEqual(consensus.getSize(), len(kept))
        a, b = self._labels("job085"), self._labels("job086")
        for group in kept.itertuples():
            cls = consensus[int(group.group)]
            expected = int(np.sum((a == group.class_job085) & (b == group.class_job086)))
            self.assertEqual(cls.getSize(), expected)
            self.assertEqual(group.size, expected)
            # The class map of the group's job085 class represents it.
            maps = self.imported.outputClasses_job085[int(group.class_job085)]
            self.assertEqual(cls.getRepresentative().getFileName(),
                             maps.getRepresentative().getFileName())
        self.assertEqual(consensus.getImages().getSize(), 240)

    def test_subsets_as_scipion_sets_and_star_files(self):
        a, b = self._labels("job085"), self._labels("job086")
        subset = self.analysis.outputParticles_job085_class3_vs_job086_class4
        self.assertEqual(subset.getSize(), int(np.sum((a == 3) & (b == 4))))
        self.assertAlmostEqual(subset.getSamplingRate(), 4.0)
        self.assertTrue(subset.hasCTF())
        perClass = self.analysis.outputParticles_job086_class2
        self.assertEqual(perClass.getSize(), int(np.sum(b == 2)))
        star = self._results("intersections", "job085_class3_vs_job086_class4.star")
        blocks = starfile.read(star, always_dict=True)
        self.assertIn("optics", blocks)
        self.assertEqual(len(blocks["particles"]), subset.getSize())
        self.assertTrue(star.read_text().startswith("\n# version 30001") or
                        star.read_text().startswith("# version 30001"))
        # The STAR rows are the subset's particles (same stack indices).
        indices = sorted(int(n.split("@")[0]) for n in blocks["particles"]["rlnImageName"])
        scipion = sorted(read_set_items(subset.getFileName(), ["_index"])["_index"])
        self.assertEqual(indices, scipion)
        self.assertTrue(self._results("pysankey_input.csv").exists())
        self.assertTrue(self._results("plots", "sankey.html").exists())

    def test_star_subsets_of_imported_sets_copy_the_relion_rows(self):
        source = find_iteration_file(self.relion / "Class3D" / "job085")
        rows = [line for line in source.read_text().splitlines() if "@" in line]
        classes = starfile.read(source, always_dict=True)["particles"]["rlnClassNumber"]
        star = self._results("per_class", "job085_class2.star").read_text()
        # each row verbatim, then its stability (rlnReciprocalStability, the last column)
        copied = [line for line in star.splitlines() if "@" in line]
        expected = [row for row, k in zip(rows, classes) if k == 2]
        self.assertEqual([line[:len(row)] for line, row in zip(copied, expected)], expected)
        self.assertEqual(len(copied), len(expected))
        self.assertTrue(all(len(line[len(row):].split()) == 1
                            for line, row in zip(copied, expected)))
        self.assertTrue(star.startswith(source.read_text().split("data_particles")[0]))
        self.assertFalse(os.path.exists(self.analysis._getExtraPath("inputs", "job085.star")))

    def test_sets_not_imported_from_relion_are_converted(self):
        prot = self.newProtocol(ProtReciprocalAnalysis, minOverlap=5, minFraction=0.05,
                                minGroupSize=5, registerSubsets=2, convertToStar=True)
        connect_many(prot.inputClassifications, self.analysis, ["outputConsensus"])
        connect_many(prot.inputClassifications, self.imported, ["outputClasses_job086"])
        self.launchProtocol(prot)
        name = "run%d" % self.analysis.getObjId()
        self.assertTrue(os.path.exists(prot._getExtraPath("inputs", "%s.star" % name)))
        consensus = read_class_items(self.analysis.outputConsensus.getFileName(), ["_index"])
        group = int(consensus["classId"].iloc[0])
        star = Path(prot._getExtraPath("results", "per_class", "%s_class%d.star" % (name, group)))
        particles = starfile.read(star, always_dict=True)["particles"]
        self.assertEqual(sorted(int(n.split("@")[0]) for n in particles["rlnImageName"]),
                         sorted(consensus.loc[consensus["classId"] == group, "_index"]))
        self.assertTrue((particles["rlnClassNumber"] == group).all())

    def test_sets_not_imported_from_relion_get_scipion_subsets_only_by_default(self):
        prot = self.newProtocol(ProtReciprocalAnalysis, minOverlap=5, minFraction=0.05,
                                minGroupSize=5, registerSubsets=0)
        connect_many(prot.inputClassifications, self.analysis, ["outputConsensus"])
        connect_many(prot.inputClassifications, self.imported, ["outputClasses_job086"])
        self.launchProtocol(prot)
        name = "run%d" % self.analysis.getObjId()
        results = Path(prot._getExtraPath("results"))
        self.assertFalse(os.path.exists(prot._getExtraPath("inputs", "%s.star" % name)))
        self.assertEqual(sorted(results.glob("*/%s_*.star" % name)), [])
        # the RELION import still gets its STAR subsets: one per class with particles
        self.assertEqual(len(list(results.glob("per_class/job086_class*.star"))),
                         len(np.unique(self._labels("job086"))))
        consensus = read_class_items(self.analysis.outputConsensus.getFileName(), ["_index"])
        for group, members in consensus.groupby("classId"):
            subset = getattr(prot, "outputParticles_%s_class%d" % (name, group))
            stored = read_set_items(subset.getFileName(), ["_index"])["_index"]
            self.assertEqual(sorted(stored), sorted(members["_index"]))
        summary = (results / "summary.txt").read_text()
        self.assertIn("%s: no STAR subsets (not read from a STAR file)" % name, summary)
        self.assertIn("No STAR subsets of %s (not unchanged RELION imports;" % name,
                      "\n".join(prot.summary()))
        self.assertFalse(any("No STAR subsets" in line for line in self.analysis.summary()))

    def test_imports_whose_star_files_changed_are_read_from_their_sets(self):
        """An import's STAR file edited after the import (job085: a row fewer; job086: one
        particle in another class) is no source of subset rows: both sets are analysed as
        Scipion holds them, and get Scipion subsets but no STAR ones."""
        relion = Path(tempfile.mkdtemp(prefix="reciprocal-edited-")) / "relion"
        dataset = build_demo_project(relion, seed=7, n_particles=60, n_micrographs=1)
        imported = self._import("85,86", "edited afterwards", relion=relion)
        fewer, moved = (find_iteration_file(relion / "Class3D" / job)
                        for job in ("job085", "job086"))
        fewer.write_text(fewer.read_text().rstrip("\n").rsplit("\n", 1)[0] + "\n")
        blocks = starfile.read(moved, always_dict=True)
        classes = blocks["particles"]["rlnClassNumber"]
        blocks["particles"].loc[0, "rlnClassNumber"] = classes.iloc[0] % classes.max() + 1
        starfile.write(blocks, moved, overwrite=True)
        prot = self._analysis(imported, ["job085", "job086"], minOverlap=1, minFraction=0.0,
                              minGroupSize=1, registerSubsets=0)
        log = Path(prot.getLogPaths()[0]).read_text()
        self.assertIn("job085: the RELION rows cannot be copied (%s has 59 rows, the set 60 "
                      "items)" % fewer, log)
        self.assertIn("job086: the RELION rows cannot be copied (classes of %s differ from "
                      "those of the set)" % moved, log)
        results = Path(prot._getExtraPath("results"))
        self.assertEqual(sorted(results.glob("*/*.star")), [])
        labels = dataset.labels["Class3D/job086"]
        for k in np.unique(labels):
            subset = getattr(prot, "outputParticles_job086_class%d" % k)
            self.assertEqual(subset.getSize(), int(np.sum(labels == k)))
        counts = pd.read_csv(results / "matrices" / "counts_job085_vs_job086.csv", index_col=0)
        self.assertEqual(counts.to_numpy().sum(), 60)

    def test_viewers_render_saved_plots(self):
        viewer = ReciprocalAnalysisViewer(project=self.proj, protocol=self.analysis)
        viewer.setProtocol(self.analysis)  # builds the form, as the GUI does
        names = viewer.plotNames()
        self.assertIn("sankey_counts", names)
        self.assertIn("heatmap_jaccard_job085_vs_job086", names)
        viewer.plot.set(names.index("sankey_counts"))
        figure = viewer._showPlot()[0].getFigure()
        self.assertGreater(figure.axes[0].images[0].get_array().shape[0], 100)
        importViewer = RelionClassificationsViewer(project=self.proj, protocol=self.imported)
        self.assertIn("convergence_job085", importViewer.plotNames())
        self.assertIn("class_slices_job086", importViewer.plotNames())

    def test_single_classification_is_refused(self):
        prot = self._analysis(self.imported, ["job085"], launch=False)
        errors = prot.validate()
        self.assertTrue(any("at least two classifications" in e for e in errors), errors)

    def test_classification_with_one_class_is_warned_about(self):
        relion = Path(tempfile.mkdtemp(prefix="reciprocal-one-class-")) / "relion"
        write_job(relion, "Class3D/job085", np.ones(20, dtype=int), n_classes=2)
        one_class = self._import("85", "one class", relion=relion)
        prot = self._analysis([self.imported, one_class], ["job086", "job085"], launch=False)
        warnings = prot.warnings()
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("outputClasses_job085 of 'one class'", warnings[0])
        self.assertIn("has particles in only one class", warnings[0])
        self.assertEqual(self._analysis(self.imported, ["job085", "job086"],
                                        launch=False).warnings(), [])
        self.assertEqual(self._analysis([self.imported, one_class], ["job086", "job085"],
                                        launch=False, doVerdict=False).warnings(), [])

    def test_missing_job_is_refused_naming_it(self):
        prot = self.newProtocol(ProtImportRelionClassifications, relionDir=str(self.relion),
                                jobs="85 99")
        errors = prot.validate()
        self.assertTrue(any("job099" in e for e in errors), errors)
        empty = self.relion / "Class3D" / "job090"
        empty.mkdir(parents=True, exist_ok=True)
        prot = self.newProtocol(ProtImportRelionClassifications, relionDir=str(self.relion),
                                jobs="Class3D/job090")
        errors = prot.validate()
        self.assertTrue(any("job090" in e for e in errors), errors)

    def test_disjoint_particle_sets_fail_and_register_nothing(self):
        other = Path(tempfile.mkdtemp(prefix="reciprocal-other-")) / "relion"
        build_demo_project(other, seed=6, n_particles=60, n_micrographs=1)  # other stacks
        imported = self._import("85", "other particles", relion=other)
        prot = self._analysis([self.imported, imported], ["job085", "job085"], launch=False)
        with self.assertRaises(Exception):
            self.launchProtocol(prot)
        prot = self.proj.getProtocol(prot.getObjId())
        self.assertTrue(prot.isFailed())
        self.assertIn("share no particles", prot.getErrorMessage())
        self.assertEqual(len(list(prot.iterOutputAttributes())), 0)


class TestReciprocalRealData(BaseTest):
    """RELION 3.1 tutorial: Class2D/job013 x Class3D/job016 (every Class3D particle is in job013)."""

    @classmethod
    def setUpClass(cls):
        if not REALDATA.is_dir():
            return
        setupTestProject(cls)

    def test_class3d_rows_sum_to_class_sizes(self):
        if not REALDATA.is_dir():
            self.skipTest("real RELION data not found at %s" % REALDATA)
        imported = self.newProtocol(ProtImportRelionClassifications, relionDir=str(REALDATA),
                                    jobs="Class3D/job016 Class2D/job013")
        self.launchProtocol(imported)
        analysis = self.newProtocol(ProtReciprocalAnalysis, registerSubsets=2)
        connect_many(analysis.inputClassifications, imported,
                     ["outputClasses_job016", "outputClasses_job013"])
        self.launchProtocol(analysis)
        counts = pd.read_csv(analysis._getExtraPath("results", "counts_matrix.csv"))
        rows = counts[(counts.job1 == 16) & (counts.job2 == 13)].groupby("class1")["value"].sum()
        # Class sizes of run_it025_data.star (rlnClassNumber counts).
        self.assertEqual(rows.to_dict(), {1: 300, 2: 179, 3: 387, 4: 4501})
        jobs = pd.read_csv(analysis._getExtraPath("results", "jobs.csv")).set_index("job")
        self.assertEqual(jobs.loc["job016", "rows_not_shared"], 0)
        self.assertEqual(jobs.loc["job013", "rows_shared"], 5367)
