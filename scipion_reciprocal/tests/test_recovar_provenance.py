"""provenance.json of RECOVAR runs (formats.recovar_provenance), from files laid out as RECOVAR
1.0.5 and the plugin's launcher write them (job.json, _diagnostics/memory_plan.json,
model/params.pkl, run.log, the launcher's record)."""
import json
import pickle

import numpy as np

from scipion_reciprocal.formats import recovar_provenance as provenance

RECORD = {"command": "pipeline", "arguments": ["inputs/particles.star", "--zdim", "2"],
          "versions": {"recovar": "1.0.5", "jax": "0.9.0.1", "jaxlib": "0.9.0.1",
                       "numpy": "2.2.6"},
          "correction": {"checked_versions": ["1.0.5"], "status": "installed",
                         "target": "recovar.core.relion_interp.backproject",
                         "corrected_calls": 2, "upsampling_factors": [2]},
          "status": 0, "jax_backend": "cpu", "devices": ["TFRT_CPU_0"],
          "wall_seconds": 149.6, "cpu_seconds": 102.1, "peak_rss_gb": 4.577}


def _pipeline_folder(folder):
    (folder / "model").mkdir(parents=True)
    (folder / "_diagnostics").mkdir()
    (folder / "job.json").write_text(json.dumps({
        "recovar_version": "1.0.5", "command": "pipeline", "status": "completed",
        "timing": {"duration_seconds": 147.7}, "environment": {"jax_version": "0.9.0.1"}}))
    (folder / "_diagnostics" / "memory_plan.json").write_text(json.dumps({
        "command": "pipeline", "n_pcs_to_compute": 131, "image_batch_size": 5006,
        "volume_batch_size": 8782, "column_batch_size": 17565,
        "budget": {"requested_gb": None, "effective_budget_gb": 11.0, "backend": "cpu",
                   "source": "cpu_helper"}}))
    with open(folder / "model" / "params.pkl", "wb") as fh:
        pickle.dump({"s": np.linspace(5, 1, 50, dtype=np.float32),
                     "covariance_options": {"n_pcs_to_compute": 131}}, fh)
    (folder / "run.log").write_text(
        "2026-12-07 03:18:47,807.807 INFO halfsets - _read_relion_halfsets_from_star: Using "
        "RELION halfsets from _rlnRandomSubset: 150 and 150 images\n"
        "2026-12-07 03:18:47,897.897 INFO helpers - get_gpu_memory_total: GPU not found. Using "
        "11 GB (half of 23 GB available RAM) for batching on CPU.\n")
    return folder


def test_entry_gathers_versions_components_budget_seeds_and_correction(tmp_path):
    folder = _pipeline_folder(tmp_path / "pipeline")
    plan = {"automatic": True, "added_options": ["--lazy"]}
    entry = provenance.command_entry("pipeline", folder, RECORD, "0.1.0", memory_plan=plan)
    assert entry["versions"] == {"recovar": "1.0.5", "jax": "0.9.0.1", "jaxlib": "0.9.0.1",
                                 "numpy": "2.2.6", "scipion-reciprocal": "0.1.0"}
    assert entry["principal_components"] == {"computed": 131, "kept": 50}
    assert entry["memory"]["budget_gb"] == 11.0 and entry["memory"]["budget_source"] == "cpu_helper"
    assert entry["memory"]["batch_sizes"] == {"image": 5006, "volume": 8782, "column": 17565}
    assert entry["memory"]["peak_rss_gb"] == 4.577 and entry["memory"]["plan"] == plan
    assert entry["half_sets"] == "Using RELION halfsets from _rlnRandomSubset: 150 and 150 images"
    assert entry["seeds"] == provenance.SEEDS["pipeline"]
    assert entry["cpu_correction"]["corrected_calls"] == 2
    assert entry["status"] == "completed" and entry["arguments"] == RECORD["arguments"]
    json.dumps(entry)  # serialisable


def test_budget_from_the_log_when_recovar_wrote_no_plan(tmp_path):
    folder = tmp_path / "analysis"
    folder.mkdir()
    (folder / "job.json").write_text(json.dumps({"command": "analyze", "status": "failed"}))
    (folder / "run.log").write_text("INFO - apply_gpu_memory_arg: GPU batch-size budget set "
                                    "to 8.0 GB via --gpu-budget-gb\n")
    entry = provenance.command_entry("analyze", folder, None, "0.1.0",
                                     pipeline_dir=_pipeline_folder(tmp_path / "pipeline"))
    assert entry["memory"]["budget_gb"] == 8.0
    assert entry["principal_components"]["computed"] == 131  # the pipeline's
    assert entry["status"] == "failed" and entry["cpu_correction"] is None
    assert entry["seeds"] == {"k-means (scikit-learn)": 0, "UMAP": 42}


def test_file_keeps_one_entry_per_folder_and_no_temporaries(tmp_path):
    path = tmp_path / "provenance.json"
    folder = _pipeline_folder(tmp_path / "pipeline")
    first = provenance.command_entry("pipeline", folder, RECORD, "0.1.0")
    provenance.update_provenance(path, first)
    rerun = dict(first, status="completed again")
    other = dict(first, command="estimate_stable_states", folder=str(tmp_path / "stable"))
    provenance.update_provenance(path, rerun)
    data = provenance.update_provenance(path, other)
    assert [r["status"] for r in data["runs"]] == ["completed again", "completed"]
    assert provenance.read_provenance(path) == json.loads(json.dumps(data))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipeline", "provenance.json"]
    assert provenance.read_provenance(tmp_path / "missing.json") == {"runs": []}


def test_summary_lines(tmp_path):
    folder = _pipeline_folder(tmp_path / "pipeline")
    entry = provenance.command_entry("pipeline", folder, RECORD, "0.1.0",
                                     memory_plan={"added_options": ["--low-memory-option"]})
    line, = provenance.summary_lines({"runs": [entry]})
    assert line.startswith("RECOVAR 1.0.5 pipeline (JAX 0.9.0.1, cpu)")
    for part in ("principal components: 131 computed, 50 kept", "memory budget 11.0 GB",
                 "peak memory 4.6 GB", "memory options added: --low-memory-option",
                 "CPU correction: applied (2 back-projections at x2)",
                 "seeds: half-set split 0, randomized SVD of the covariance columns 0"):
        assert part in line, part
    unpatched = dict(entry, cpu_correction={"status": "not applied",
                                            "reason": "RECOVAR 1.1 is not a checked version"})
    assert "CPU correction: not applied (RECOVAR 1.1" in provenance.summary_lines(
        {"runs": [unpatched]})[0]
