"""Readers of RECOVAR's junk detection, pipeline-with-outliers and postprocess folders, on
files laid out as RECOVAR 1.0.5 writes them (docs/recovar-1.0.5.md), and their figures."""
import pickle

import numpy as np
import pytest

from scipion_reciprocal.formats import recovar_cleaning as rc
from scipion_reciprocal.formats import recovar_postprocess as rp
from scipion_reciprocal.formats.recovar_results import RecovarResultError
from scipion_reciprocal.plotting.recovar_cleaning import (flagged_latent_figure,
                                                          junk_clusters_figure,
                                                          outlier_rounds_figure)


def _dump(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)


def test_outlier_rounds_give_each_row_the_round_that_removed_it(tmp_path):
    n = 10
    _dump(tmp_path / "inliers_round_1.pkl", np.array([0, 1, 2, 3, 5, 6, 7, 8]))
    _dump(tmp_path / "inliers_round_2.pkl", np.array([0, 2, 3, 6, 7, 8]))
    (tmp_path / "round_1").mkdir()
    (tmp_path / "round_2").mkdir()
    rounds = rc.read_outlier_rounds(tmp_path, n)
    assert rounds.rounds == [1, 2]
    np.testing.assert_array_equal(rounds.removed_in, [0, 2, 0, 0, 1, 2, 0, 0, 0, 1])
    np.testing.assert_array_equal(rounds.kept, [0, 2, 3, 6, 7, 8])
    assert rounds.removed_per_round() == [2, 2]
    assert rounds.last_pipeline == tmp_path / "round_2"
    assert rc.last_round_dir(tmp_path) == tmp_path / "round_2"


def test_outlier_rounds_refuse_inconsistent_or_missing_rounds(tmp_path):
    with pytest.raises(RecovarResultError, match="no round"):
        rc.read_outlier_rounds(tmp_path, 5)
    _dump(tmp_path / "inliers_round_1.pkl", np.array([0, 1, 2]))
    _dump(tmp_path / "inliers_round_2.pkl", np.array([0, 4]))
    (tmp_path / "round_2").mkdir()
    with pytest.raises(RecovarResultError, match="previous round removed"):
        rc.read_outlier_rounds(tmp_path, 5)


def test_junk_indices_map_to_rows_through_the_half_sets(tmp_path):
    # The pipeline embedded rows 1, 3, 4, 6, 8 (as RECOVAR numbers them 0..4).
    halfsets = [np.array([3, 8, 1]), np.array([6, 4])]
    _dump(tmp_path / "data" / "junk_indices_2.pkl", [0, 3])
    _dump(tmp_path / "data" / "good_indices_2.pkl", [1, 2, 4])
    result = rc.read_junk_detection(tmp_path, 2, halfsets=halfsets, n_rows=10)
    np.testing.assert_array_equal(result.junk, [1, 6])
    np.testing.assert_array_equal(result.good, [3, 4, 8])
    assert result.clusters is None and result.labels is None
    with pytest.raises(RecovarResultError, match="5 particles classified but the pipeline embedded 2"):
        rc.read_junk_detection(tmp_path, 2, halfsets=[np.array([1, 2])], n_rows=10)


def test_junk_clusters_from_recovars_diagnostics(tmp_path):
    halfsets = [np.array([0, 2, 4]), np.array([1, 3, 5])]
    _dump(tmp_path / "data" / "junk_indices_4.pkl", [4, 5])
    _dump(tmp_path / "data" / "good_indices_4.pkl", [0, 1, 2, 3])
    # As RECOVAR's --save-all-plots writes it: labels, and per cluster the frequency (1/A)
    # where the half-map FSC (and the FSC against the mean) falls below 1/7.
    _dump(tmp_path / "data" / "junk_detection_results_4.pkl", {
        "cluster_centers": np.zeros((3, 4)),
        "cluster_indices": np.array([0, 0, 1, 1, 2, 2]),
        "fsc_scores": {0: {"halfmap_fsc": 0.05, "vs_mean_fsc": np.array(0.06)},
                       1: {"halfmap_fsc": 0.04, "vs_mean_fsc": 0.05},
                       2: {"halfmap_fsc": np.array(0.01), "vs_mean_fsc": 0.0}},
        "fsc_auc_scores": {k: {"halfmap_auc": 0.02, "vs_mean_auc": 0.03} for k in range(3)}})
    result = rc.read_junk_detection(tmp_path, 4, halfsets=halfsets, n_rows=6)
    table = result.clusters
    assert list(table["size"]) == [2, 2, 2]
    assert list(table["junk"]) == [False, False, True]
    np.testing.assert_allclose(table["halfmap_resolution"], [20.0, 25.0, 100.0])
    assert np.isinf(table["vs_mean_resolution"].iloc[2])
    np.testing.assert_array_equal(result.labels, [0, 0, 1, 1, 2, 2])
    fig = junk_clusters_figure(table)
    assert len(fig.axes) == 2


def test_postprocess_batch_folder_and_results(tmp_path):
    for name in ("a1.mrc", "a2.mrc", "b1.mrc", "b2.mrc"):
        (tmp_path / name).write_bytes(b"x")
    names = rp.write_batch_input(tmp_path / "in", [(tmp_path / "a1.mrc", tmp_path / "a2.mrc"),
                                                   (tmp_path / "b1.mrc", tmp_path / "b2.mrc")])
    assert names == ["vol000", "vol001"]
    assert (tmp_path / "in" / "vol001" / rp.HALF2_NAME).resolve() == (tmp_path / "b2.mrc")
    out = tmp_path / "out"
    out.mkdir()
    (out / "vol000_filtered.mrc").write_bytes(b"x")
    (out / "vol000_filtered_info.txt").write_text(
        "Global Resolution: 13.71 Angstroms\nVoxel Size: 6.0 Angstroms\n"
        "B-factor: 85.2 Angstroms^2\nEstimated B-factor: 85.20 Angstroms^2\n")
    results = rp.read_postprocess(out, names[:1])
    assert results[0].resolution == pytest.approx(13.71)
    assert results[0].bfactor == pytest.approx(85.2)
    assert results[0].local_resolution is None
    with pytest.raises(RecovarResultError, match="vol001"):
        rp.read_postprocess(out, names)


def test_cleaning_figures_draw():
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(50, 2))
    coords[3] = np.nan
    groups = (np.arange(50) % 3)
    fig = flagged_latent_figure(coords, groups, ["kept", "round 1", "round 2"], "test")
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["kept (16)", "round 1 (17)", "round 2 (16)"]
    fig = flagged_latent_figure(coords[:, :1], groups % 2, ["clean", "junk"], "1D")
    assert fig.axes[0].get_xlabel() == "particle"
    fig = outlier_rounds_figure(100, [12, 5])
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == [88, 83, 12, 5]


def test_bfactors_in_angstrom_units_and_their_record(tmp_path):
    # RECOVAR 1.0.5 applies exp(B k^2 / 4) with k in cycles per pixel: 1000 A^2 at 6 A/px.
    assert rp.recovar_bfactor(1000.0, 6.0) == pytest.approx(1000.0 / 36)
    rp.write_bfactors(tmp_path / "b.json", ["vol000", "vol001"], [812.5, None])
    assert rp.read_bfactors(tmp_path / "b.json", ["vol001", "vol000"]) == [None, 812.5]
    with pytest.raises(RecovarResultError, match="vol002"):
        rp.read_bfactors(tmp_path / "b.json", ["vol002"])
