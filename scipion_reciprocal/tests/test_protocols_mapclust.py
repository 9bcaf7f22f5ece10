"""Map similarity clustering in a real Scipion project.

Runs under pytest and with ``python -m scipion tests scipion_reciprocal.tests.test_protocols_mapclust``.
"""
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from pwem.protocols import ProtImportVolumes
from pyworkflow.tests import BaseTest, setupTestProject
from scipy.spatial.transform import Rotation
from sklearn.metrics import adjusted_rand_score

from scipion_reciprocal.formats.mrc import read_map, write_map
from scipion_reciprocal.protocols import ProtMapClustering
from scipion_reciprocal.simulate.molecule import molecule_maps, rotate_map
from scipion_reciprocal.viewers import MapClusteringViewer
from scipion_reciprocal.workflows.wiring import connect_many

VOXEL = 4.0


def write_noisy_copies(folder, seed=0):
    """Three states x three noisy copies; the third copy of each is rotated and shifted."""
    rng = np.random.default_rng(seed)
    maps = molecule_maps(n_states=3, box=32, pixel_size=VOXEL, seed=seed)
    truth = {}
    for state, volume in enumerate(maps):
        for copy in range(3):
            data = volume
            if copy == 2:
                rotation = Rotation.from_euler("ZYZ", rng.uniform(-40, 40, 3), degrees=True)
                data = rotate_map(volume, rotation.as_matrix(), rng.uniform(-2, 2, 3))
            data = data + rng.normal(0, 0.05 * volume.std(), volume.shape).astype(np.float32)
            name = "state%d_copy%d" % (state, copy)
            write_map(Path(folder) / ("%s.mrc" % name), data, VOXEL)
            truth[name] = state
    return truth


class TestMapClusteringProtocol(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.folder = Path(tempfile.mkdtemp(prefix="reciprocal-maps-"))
        cls.truth = write_noisy_copies(cls.folder)
        cls.volumes = cls.newProtocol(ProtImportVolumes, filesPath=str(cls.folder),
                                      filesPattern="state*.mrc", samplingRate=VOXEL)
        cls.launchProtocol(cls.volumes)

    def _clustering(self, **kwargs):
        prot = self.newProtocol(ProtMapClustering, **kwargs)
        connect_many(prot.inputMaps, self.volumes, ["outputVolumes"])
        return prot

    def test_aligned_clustering_recovers_the_states(self):
        prot = self._clustering(nClusters=0, lowpass=12.0)
        self.launchProtocol(prot)
        clusters = pd.read_csv(prot._getExtraPath("results", "cluster_results.csv"))
        self.assertEqual(list(clusters.columns), ["name", "cluster"])
        # Scipion's import names the files import_<original name>.
        truth = [self.truth[name.replace("import_", "", 1)] for name in clusters["name"]]
        self.assertEqual(adjusted_rand_score(truth, clusters["cluster"]), 1.0)
        self.assertEqual(prot.outputAlignedVolumes.getSize(), 9)
        self.assertEqual(prot.outputAverages.getSize(), 3)
        self.assertEqual(prot.outputClasses.getSize(), 3)
        self.assertEqual(sorted(cls.getSize() for cls in prot.outputClasses), [3, 3, 3])
        # The rotated, shifted copy is brought back onto the others.
        similarity = pd.read_csv(prot._getExtraPath("results", "correlation_matrix.csv"),
                                 index_col=0)
        self.assertGreater(similarity.loc["import_state1_copy0", "import_state1_copy2"], 0.95)
        average, voxel = read_map(prot.outputAverages.getFirstItem().getFileName())
        self.assertEqual(average.shape, (32, 32, 32))
        self.assertAlmostEqual(voxel, VOXEL, places=3)
        viewer = MapClusteringViewer(project=self.proj, protocol=prot)
        viewer.setProtocol(prot)
        self.assertIn("dendrogram", viewer.plotNames())
        self.assertIn("cluster_1_montage", viewer.plotNames())
        figure = viewer._showPlot()[0].getFigure()
        self.assertGreater(figure.axes[0].images[0].get_array().shape[0], 100)

    def test_single_map_is_refused(self):
        prot = self.newProtocol(ProtMapClustering)
        prot.inputMaps.append(self.volumes.outputVolumes.getFirstItem().clone())
        errors = prot.validate()
        self.assertTrue(any("at least two maps" in e for e in errors), errors)

    def test_number_of_clusters_is_checked_against_the_maps(self):
        prot = self.newProtocol(ProtMapClustering, nClusters=0)
        for volume in [v.clone() for v in self.volumes.outputVolumes][:2]:
            prot.inputMaps.append(volume)
        errors = prot.validate()
        self.assertTrue(any("automatically needs at least 3 maps (got 2)" in e for e in errors),
                        errors)
        errors = self._clustering(nClusters=10).validate()
        self.assertTrue(any("(10) is more than the maps given (9)" in e for e in errors), errors)
        self.assertEqual(self._clustering(nClusters=9).validate(), [])

    def test_largest_k_below_two_is_refused_and_extra_names_warn(self):
        errors = self._clustering(nClusters=0, maxClusters=1).validate()
        self.assertIn("'Largest k tried' must be at least 2 (got 1).", errors)
        self.assertEqual(self._clustering(nClusters=3, maxClusters=1).validate(), [])
        names = self.folder / "names_extra.csv"
        rows = ["original_filename,custom_name"] + ["import_%s.mrc,%s" % (n, n.upper())
                                                    for n in self.truth] + ["state9.mrc,X"]
        names.write_text("\n".join(rows) + "\n")
        prot = self._clustering(namesCsv=str(names))
        self.assertEqual(prot.validate(), [])
        warnings = prot._warnings()
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("1 of its rows name no input map (state9.mrc)", warnings[0])

    def test_names_csv_with_wrong_header_is_refused(self):
        names = self.folder / "names.csv"
        names.write_text("file,label\nstate0_copy0.mrc,A\n")
        prot = self._clustering(namesCsv=str(names))
        errors = prot.validate()
        self.assertTrue(any("names.csv" in e for e in errors), errors)

    def test_map_with_nan_fails_naming_it(self):
        folder = Path(tempfile.mkdtemp(prefix="reciprocal-nan-"))
        good = molecule_maps(n_states=1, box=32, pixel_size=VOXEL)[0]
        write_map(folder / "good.mrc", good, VOXEL)
        bad = good.copy()
        bad[3, 3, 3] = np.nan
        write_map(folder / "broken.mrc", bad, VOXEL)
        volumes = self.newProtocol(ProtImportVolumes, filesPath=str(folder), filesPattern="*.mrc",
                                   samplingRate=VOXEL)
        self.launchProtocol(volumes)
        prot = self.newProtocol(ProtMapClustering, nClusters=2)
        connect_many(prot.inputMaps, volumes, ["outputVolumes"])
        with self.assertRaises(Exception):
            self.launchProtocol(prot)
        prot = self.proj.getProtocol(prot.getObjId())
        self.assertTrue(prot.isFailed())
        self.assertIn("broken", prot.getErrorMessage())
        self.assertEqual(len(list(prot.iterOutputAttributes())), 0)
