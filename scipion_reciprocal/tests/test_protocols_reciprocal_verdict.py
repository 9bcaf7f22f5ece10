"""The consensus verdict through the reciprocal analysis protocol, in a real Scipion project:
4 simulated Class3D runs of 3 states and junk (15% of particles reassigned at random per run).

Runs under pytest and with ``python -m scipion tests
scipion_reciprocal.tests.test_protocols_reciprocal_verdict``.
"""
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import starfile
from pyworkflow.tests import BaseTest, setupTestProject

from scipion_reciprocal.convert.set_sql import read_class_items, read_set_items
from scipion_reciprocal.protocols import ProtImportRelionClassifications, ProtReciprocalAnalysis
from scipion_reciprocal.protocols.reciprocal_verdict_outputs import STABILITY_ATTRIBUTE
from scipion_reciprocal.simulate.consensus_runs import write_consensus_project
from scipion_reciprocal.viewers import ReciprocalAnalysisViewer
from scipion_reciprocal.workflows.wiring import connect_many

JOBS = ["job090", "job091", "job092", "job093"]
N = 600


class TestReciprocalVerdict(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        folder = Path(tempfile.mkdtemp(prefix="reciprocal-verdict-")) / "relion"
        cls.sim = write_consensus_project(folder, n_particles=N, n_states=3, n_runs=4, seed=3)
        cls.imported = cls.newProtocol(ProtImportRelionClassifications, relionDir=str(folder),
                                       jobs="90,91,92,93")
        cls.launchProtocol(cls.imported)
        cls.analysis = cls._analysis(minGroupSize=5, registerSubsets=2)

    @classmethod
    def _analysis(cls, **kwargs):
        prot = cls.newProtocol(ProtReciprocalAnalysis, **kwargs)
        connect_many(prot.inputClassifications, cls.imported,
                     ["outputClasses_%s" % job for job in JOBS])
        cls.launchProtocol(prot)
        return prot

    def _results(self, *names, prot=None):
        return Path((prot or self.analysis)._getExtraPath("results", *names))

    def _verdict(self, prot=None):
        return json.loads(self._results("verdict.json", prot=prot).read_text())

    def test_reproducible_states_and_junk_classes(self):
        verdict = self._verdict()
        self.assertEqual(verdict["reproducible_states"], 3)
        table = pd.read_csv(self._results("reproducibility.csv"))
        for job, junk in zip(JOBS, self.sim.runs.junk_classes):
            row = table[(table.job == job) & (table["class"] == junk)]
            self.assertEqual(row["status"].tolist(), ["not reproduced"])
        self.assertEqual(verdict["reproduced_classes"], {job: 3 for job in JOBS})
        self.assertTrue(verdict["parameters"]["class_maps_used"])  # the classes' representatives
        summary = self.analysis.summary()
        self.assertTrue(summary[0].startswith("Verdict: 3 reproducible states;"), summary)
        self.assertIn("Benjamini1995fdr", self.analysis._citations())

    def test_stable_and_unstable_particles(self):
        verdict = self._verdict()
        stable, unstable = self.analysis.outputStableParticles, self.analysis.outputUnstableParticles
        self.assertEqual(stable.getSize(), verdict["stable_particles"])
        self.assertEqual(unstable.getSize(), N - verdict["stable_particles"])
        self.assertTrue(stable.hasCTF() and stable.hasAlignmentProj())
        items = read_set_items(stable.getFileName(), ["_index", STABILITY_ATTRIBUTE])
        index = items["_index"].to_numpy() - 1                    # stack image i+1 = particle i
        states = self.sim.runs.states[index]
        # every consistently classified state particle is stable, and every stable state
        # particle was classified consistently (junk can land in one state's classes 4 times)
        consistent = np.flatnonzero(self.sim.runs.consistent)
        self.assertEqual(sorted(index[states >= 0]), consistent.tolist())
        self.assertTrue((items[STABILITY_ATTRIBUTE] >= 0.75).all())
        others = read_set_items(unstable.getFileName(), ["_index", STABILITY_ATTRIBUTE])
        self.assertEqual(len(set(others["_index"]) & set(items["_index"])), 0)
        membership = pd.read_csv(self._results("consensus_membership.csv"))
        score = membership.set_index("row_job090")["stability"]
        np.testing.assert_allclose(others[STABILITY_ATTRIBUTE],
                                   score.loc[others["_index"] - 1], atol=1e-6)
        # Scipion reads the attribute back as a Float
        first = next(iter(stable.iterItems()))
        self.assertGreaterEqual(getattr(first, STABILITY_ATTRIBUTE).get(), 0.75)
        star = starfile.read(self._results("stable_particles.star"))["particles"]
        self.assertEqual(sorted(int(n.split("@")[0]) for n in star["rlnImageName"]),
                         sorted(items["_index"]))
        np.testing.assert_allclose(star["rlnReciprocalStability"], 1.0)

    def test_merged_groups_as_classes(self):
        merged = self.analysis.outputMerged
        table = pd.read_csv(self._results("merged_groups.csv"))
        self.assertEqual(merged.getSize(), len(table))
        self.assertEqual(merged.getSize(), self._verdict()["merged_groups"])
        sizes = {cls.getObjId(): cls.getSize() for cls in merged.iterItems()}
        self.assertEqual(sizes, dict(zip(table["merged"], table["size"])))
        items = read_class_items(merged.getFileName(), ["_index"])
        truth = self.sim.runs.states[items["_index"].to_numpy() - 1]
        from sklearn.metrics import adjusted_rand_score
        self.assertGreaterEqual(adjusted_rand_score(truth, items["classId"]), 0.95)
        for cls in merged.iterItems():
            self.assertTrue(Path(cls.getRepresentative().getFileName()).exists())

    def test_viewer_shows_the_verdict_and_its_plots(self):
        viewer = ReciprocalAnalysisViewer(project=self.proj, protocol=self.analysis)
        viewer.setProtocol(self.analysis)
        self.assertEqual(viewer.verdictSentence(), self._verdict()["verdict"])
        names = viewer.plotNames()
        self.assertEqual(names[:4], ["sankey_groups", "enrichment", "merge_dendrogram",
                                     "stability"])
        self.assertEqual(len(names), len(set(names)))
        viewer.plot.set(names.index("enrichment"))
        figure = viewer._showPlot()[0].getFigure()
        self.assertGreater(figure.axes[0].images[0].get_array().shape[0], 100)
        self.assertTrue(viewer._getVisualizeDict()["verdict"]())
        # a folder without its manifest (a killed run) shows no verdict
        manifest = self._results("manifest.json")
        manifest.rename(manifest.with_suffix(".away"))
        try:
            self.assertIsNone(viewer.verdictSentence())
            message = viewer._getVisualizeDict()["verdict"]()[0]
            self.assertIn("Its files are not shown", message._msg)
        finally:
            manifest.with_suffix(".away").rename(manifest)

    def test_second_analysis_of_the_stable_particles(self):
        prot = self.newProtocol(ProtReciprocalAnalysis, minGroupSize=5, registerSubsets=2)
        connect_many(prot.inputClassifications, self.imported,
                     ["outputClasses_%s" % job for job in JOBS])
        prot.onlyParticles.set(self.analysis)
        prot.onlyParticles.setExtended("outputStableParticles")
        self.launchProtocol(prot)
        stable = self._verdict()["stable_particles"]
        jobs = pd.read_csv(self._results("jobs.csv", prot=prot))
        self.assertEqual(jobs["rows_kept"].tolist(), [stable] * 4)
        verdict = self._verdict(prot)
        self.assertEqual(verdict["reproducible_states"], 3)
        self.assertEqual(verdict["stable_particles"], stable)

    def test_without_the_verdict(self):
        prot = self.newProtocol(ProtReciprocalAnalysis, minGroupSize=5, registerSubsets=2,
                                doVerdict=False)
        connect_many(prot.inputClassifications, self.imported,
                     ["outputClasses_job090", "outputClasses_job091"])
        self.launchProtocol(prot)
        self.assertFalse(self._results("verdict.json", prot=prot).exists())
        self.assertFalse(self._results("stable_particles.star", prot=prot).exists())
        outputs = {name for name, _ in prot.iterOutputAttributes()}
        self.assertEqual(outputs, {"outputConsensus"})
        self.assertNotIn("p_value", pd.read_csv(self._results("consensus_groups.csv",
                                                              prot=prot)).columns)

    def test_parameters_are_checked(self):
        prot = self.newProtocol(ProtReciprocalAnalysis, fdr=1.5, automaticCut=False,
                                mergeDistance=-0.2)
        connect_many(prot.inputClassifications, self.imported,
                     ["outputClasses_job090", "outputClasses_job091"])
        errors = prot.validate()
        self.assertTrue(any("False discovery rate must be between 0 and 1" in e for e in errors),
                        errors)
        self.assertTrue(any("Merge distance must be between 0 and 1" in e for e in errors), errors)
