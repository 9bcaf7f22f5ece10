"""Particle classifier protocols in a real Scipion project, with the real TensorFlow backend.

The protocol tests skip when the classifier environment is not installed; the refusal of a
missing environment needs none.  Runs under pytest and with
``python -m scipion tests scipion_reciprocal.tests.test_protocols_classifier``.
"""
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from pwem.protocols import ProtImportMicrographs
from pyworkflow.protocol.constants import MODE_RESUME
from pyworkflow.tests import BaseTest, setupTestProject

from scipion_reciprocal import Plugin
from scipion_reciprocal.convert.set_sql import read_set_items
from scipion_reciprocal.core.picking import evaluate_picks
from scipion_reciprocal.environments import BACKENDS
from scipion_reciprocal.formats.result_folder import folder_status
from scipion_reciprocal.protocols import (ProtClassifyParticles, ProtPickMicrographs,
                                          ProtTrainParticleClassifier)
from scipion_reciprocal.simulate.dataset import build_demo_project
from scipion_reciprocal.viewers import (ClassifierPickingViewer, ClassifierScoresViewer,
                                        ClassifierTrainingViewer)
from scipion_reciprocal.workflows.wiring import connect, relion_particles_import

PIXEL = 4.0
BOX = 32


class TestClassifierProtocols(BaseTest):
    @classmethod
    def setUpClass(cls):
        cls.missing = Plugin.validateBackend("classifier")
        if cls.missing:
            return
        setupTestProject(cls)
        base = Path(tempfile.mkdtemp(prefix="reciprocal-classifier-"))
        cls.training = build_demo_project(base / "train", seed=11, n_particles=30, n_micrographs=12)
        cls.held = build_demo_project(base / "held", seed=12, n_particles=30, n_micrographs=3)
        cls.good = _importParticles(cls, cls.training.good_star, "good")
        cls.bad = _importParticles(cls, cls.training.bad_star, "bad")
        cls.train = cls.newProtocol(ProtTrainParticleClassifier, box=BOX, epochs=30, patience=8)
        connect(cls.train.goodParticles, cls.good, "outputParticles")
        connect(cls.train.badParticles, cls.bad, "outputParticles")
        cls.launchProtocol(cls.train)

    def setUp(self):
        if self.missing:
            self.skipTest(self.missing[0])

    def test_training_reports_held_out_figures(self):
        model = self.train.outputModel
        self.assertEqual(model.getBox(), BOX)
        self.assertAlmostEqual(model.getPixelSize(), PIXEL)
        self.assertTrue(os.path.exists(model.getModelFile()))
        self.assertGreaterEqual(model.getTestAuc(), 0.95)
        viewer = ClassifierTrainingViewer(project=self.proj, protocol=self.train)
        viewer.setProtocol(self.train)
        self.assertEqual(viewer.plotNames(), ["learning_curves", "roc", "confusion"])
        # Every file of the run is in the manifest (input table, backend's model, plots).
        status = folder_status(self.train._getExtraPath(), verify=True)
        self.assertTrue(status.complete, status.reason)
        self.assertTrue({"particles.csv", "model/model.keras", "plots/roc.png"} <= set(status.files))
        self.assertEqual(viewer.incompleteReason(), "")

    def test_classify_held_out_boxes_and_rethreshold(self):
        picked = _importParticles(self, self.held.picked_star, "held-out boxes")
        classify = self.newProtocol(ProtClassifyParticles, threshold=0.5)
        connect(classify.inputParticles, picked, "outputParticles")
        connect(classify.inputModel, self.train, "outputModel")
        self.launchProtocol(classify)
        total = picked.outputParticles.getSize()
        good = classify.outputGood
        self.assertEqual(good.getSize() + classify.outputBad.getSize(), total)
        # Boxes 1..nGood of the picked stack are the true particles (good first, then bad).
        nTrue = sum(1 for _ in open(self.held.good_star) if "@" in _)
        goodIndices = read_set_items(good.getFileName(), ["_index"])["_index"].to_numpy()
        precision = np.mean(goodIndices <= nTrue)
        recall = np.sum(goodIndices <= nTrue) / nTrue
        self.assertGreaterEqual(precision, 0.9)
        self.assertGreaterEqual(recall, 0.9)
        scores = [p._classifierScore.get() for p in good]
        self.assertTrue(all(s >= 0.5 for s in scores))
        # A new threshold re-runs only the final step (scores are not recomputed).
        scoresFile = classify._getExtraPath("scores.csv")
        stamp = os.path.getmtime(scoresFile)
        classify.threshold.set(0.9)
        classify.runMode.set(MODE_RESUME)
        self.launchProtocol(classify)
        self.assertEqual(os.path.getmtime(scoresFile), stamp)
        self.assertLessEqual(classify.outputGood.getSize(), good.getSize())
        self.assertTrue(all(p._classifierScore.get() >= 0.9 for p in classify.outputGood))
        status = folder_status(classify._getExtraPath(), verify=True)  # sealed again
        self.assertTrue(status.complete, status.reason)
        self.assertTrue({"particle_ids.npy", "scores.csv", "plots/gallery_lowest.png"}
                        <= set(status.files))
        viewer = ClassifierScoresViewer(project=self.proj, protocol=classify)
        viewer.setProtocol(classify)
        self.assertEqual(sorted(viewer.plotNames()),
                         ["gallery_highest", "gallery_lowest", "score_histogram"])

    def test_pick_held_out_micrographs(self):
        micrographs = self.newProtocol(
            ProtImportMicrographs, filesPath=str(self.held.micrograph_paths[0].parent),
            filesPattern="*.mrc", samplingRate=PIXEL, voltage=300.0, sphericalAberration=2.7,
            amplitudeContrast=0.1)
        self.launchProtocol(micrographs)
        pick = self.newProtocol(ProtPickMicrographs, threshold=0.5, keepRejected=True)
        connect(pick.inputMicrographs, micrographs, "outputMicrographs")
        connect(pick.inputModel, self.train, "outputModel")
        self.launchProtocol(pick)
        coords = pick.outputCoordinates
        self.assertEqual(coords.getBoxSize(), BOX)
        # Match picks to the known particle centres (within half a box) per micrograph.
        mics = {m.getObjId(): os.path.basename(m.getFileName()) for m in micrographs.outputMicrographs}
        picks = pd.DataFrame([(mics[c.getMicId()], c.getX(), c.getY()) for c in coords],
                             columns=["micrograph", "x", "y"])
        truth = self.held.micrographs.coordinates.copy()
        names = sorted(mics.values())
        truth["micrograph"] = [names[int(i)] for i in truth["micrograph"]]
        figures = evaluate_picks(picks, truth[["micrograph", "x", "y"]], radius=BOX / 2)
        self.assertGreaterEqual(figures["recall"], 0.9, figures)
        self.assertGreaterEqual(figures["precision"], 0.9, figures)
        self.assertGreater(pick.outputRejected.getSize(), 0)
        self.assertTrue(all(c._classifierScore.get() < 0.5 for c in pick.outputRejected))
        star = Path(pick._getExtraPath("picks", "coordinates"))
        self.assertEqual(len(list(star.glob("*_classifier.star"))), 3)
        status = folder_status(pick._getExtraPath(), verify=True)
        self.assertTrue(status.complete, status.reason)
        self.assertEqual(len([f for f in status.files if f.endswith("_classifier.star")]), 3)
        viewer = ClassifierPickingViewer(project=self.proj, protocol=pick)
        viewer.setProtocol(pick)
        self.assertEqual(len([n for n in viewer.plotNames() if n.startswith("picks_")]), 3)


class TestClassifierWithoutBackend(BaseTest):
    """What needs no TensorFlow."""

    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        data = build_demo_project(Path(tempfile.mkdtemp(prefix="reciprocal-classifier-")),
                                  seed=11, n_particles=30, n_micrographs=2)
        cls.good = _importParticles(cls, data.good_star, "good")
        cls.bad = _importParticles(cls, data.bad_star, "bad")

    def test_missing_environment_is_refused(self):
        backend = BACKENDS["classifier"]
        previous = Plugin.getVar(backend.activation_var)
        Plugin._vars[backend.activation_var] = "false"
        try:
            prot = self.newProtocol(ProtTrainParticleClassifier)
            connect(prot.goodParticles, self.good, "outputParticles")
            connect(prot.badParticles, self.bad, "outputParticles")
            errors = prot.validate()
            self.assertTrue(any("installb classifier" in e for e in errors), errors)
        finally:
            Plugin._vars[backend.activation_var] = previous


def _importParticles(test, star, label):
    """Import a RELION particle STAR file into ``test``'s project."""
    prot = relion_particles_import(test.proj, star, PIXEL)
    prot.setObjLabel(label)
    test.launchProtocol(prot)
    return prot
