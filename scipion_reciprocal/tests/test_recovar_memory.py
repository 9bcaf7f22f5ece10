"""Memory estimate and plan of RECOVAR runs (core.recovar_memory) and RECOVAR's setting checks
(core.recovar_checks): plain numbers, no RECOVAR needed."""
from dataclasses import replace

import pytest

from scipion_reciprocal.core import recovar_checks as checks
from scipion_reciprocal.core import recovar_memory as mem


def _pipeline(box=256, n=100000, **kwargs):
    return mem.MemoryRequest("pipeline", box, n, downsample=0, **kwargs)


def test_terms_follow_the_sizes():
    estimated = mem.estimate(_pipeline(128, 50000), gpu_gb=80, host_available_gb=256)
    terms = estimated.terms
    assert terms["images"] == pytest.approx(50000 * 128 ** 2 * 4 / 1e9)
    assert terms["columns"] == pytest.approx(2 * 300 * 128 ** 3 * 8 / 1e9)
    assert terms["mean"] == pytest.approx(2 * 256 ** 3 * 12 / 1e9)
    assert terms["basis"] == pytest.approx(200 * 128 ** 3 * 8 / 1e9)
    assert terms["batches"] == pytest.approx(0.75 * 80 + mem.BATCH_OVERHEAD_GB)  # JAX: 75 %
    assert estimated.gpu_gb == pytest.approx(sum(terms[k] for k in
                                                 ("columns", "mean", "basis", "batches")))
    assert estimated.host_gb == pytest.approx(terms["runtime"] + terms["images"])


def test_recovar_readme_figures_at_256_px():
    """RECOVAR's README: about 200 GB at 256 px with the defaults, about 60 GB with
    --low-memory-option (an 80 GB GPU, whose budget is what JAX reports)."""
    normal = mem.estimate(_pipeline(), gpu_gb=80, host_available_gb=512)
    low = mem.estimate(_pipeline(memory="low"), gpu_gb=80, host_available_gb=512)
    assert 150 <= normal.gpu_gb <= 250
    assert 45 <= low.gpu_gb <= 80
    very_low = mem.estimate(_pipeline(memory="very low"), gpu_gb=80, host_available_gb=512)
    assert very_low.gpu_gb < low.gpu_gb


def test_kernel_regression_is_bins_times_volume_times_32_bytes():
    request = mem.MemoryRequest("compute_state", 128, 50000, n_bins=50)
    assert mem.estimate(request, 80, 256).terms["kernel"] == pytest.approx(50 * 128 ** 3 * 32 / 1e9)
    no_volumes = mem.MemoryRequest("analyze", 128, 50000, kernel_volumes=False)
    assert mem.estimate(no_volumes, 80, 256).terms == {"runtime": mem.RUNTIME_GB}


def test_small_cpu_runs_are_limited_by_the_data_not_the_budget():
    small = mem.estimate(_pipeline(24, 300), gpu_gb=None, host_available_gb=22)
    assert small.gpu_gb is None
    assert small.budget_gb == 11  # half the free RAM, as RECOVAR's CPU default
    assert small.terms["batches"] == pytest.approx(mem.BYTES_PER_IMAGE_PIXEL * 300 * 24 ** 2 / 1e9)
    assert small.host_gb == pytest.approx(sum(small.terms.values()))


def test_downsampling_sets_the_working_box():
    assert _pipeline(300).working_box() == 300
    assert mem.MemoryRequest("pipeline", 300, 10).working_box() == 256    # RECOVAR's default
    assert mem.MemoryRequest("pipeline", 280, 10).working_box() == 280    # within 12.5 %
    assert mem.MemoryRequest("pipeline", 300, 10, downsample=128).working_box() == 128
    assert mem.MemoryRequest("compute_state", 300, 10, downsample=128).working_box() == 300
    assert _pipeline().options()["--no-downsample"] is True


def test_a_run_that_fits_is_left_alone():
    result = mem.plan(_pipeline(24, 300), None, 20)
    assert result.fits and result.added_flags() == [] and result.request == _pipeline(24, 300)


def test_plan_takes_the_least_costly_option_that_fits():
    # 80 GB GPU at 256 px: the defaults need ~170 GB; the low-memory option with a slightly
    # smaller budget fits.
    result = mem.plan(_pipeline(), 80, 512)
    assert not result.fits
    assert list(result.added_options) == ["--low-memory-option", "--gpu-budget-gb"]
    _assert_largest_budget_that_fits(result.request, 80)
    # Host too small for the images: --lazy as well.
    result = mem.plan(_pipeline(), 80, 20)
    assert result.added_options["--lazy"] is True
    # A 24 GB GPU: only the very-low-memory option fits.
    assert mem.plan(_pipeline(), 24, 512).added_flags()[0] == "--very-low-memory-option"
    # An 8 GB GPU: nothing at 256 px, a smaller box does.
    result = mem.plan(_pipeline(), 8, 512)
    assert result.request.downsample < 256
    assert result.fitted.gpu_gb <= mem.SAFETY * 8


def test_plan_only_lowers_the_budget_when_the_fixed_arrays_fit():
    request = mem.MemoryRequest("compute_state", 256, 100000, n_bins=50)
    result = mem.plan(request, 40, 256)
    assert list(result.added_options) == ["--gpu-budget-gb"]
    _assert_largest_budget_that_fits(result.request, 40)


def _assert_largest_budget_that_fits(request, gpu_gb):
    assert mem.estimate(request, gpu_gb, 512).gpu_gb <= mem.SAFETY * gpu_gb
    larger = replace(request, budget_gb=request.budget_gb + 1)
    assert mem.estimate(larger, gpu_gb, 512).gpu_gb > mem.SAFETY * gpu_gb


def test_a_run_that_cannot_fit_names_its_largest_part():
    request = mem.MemoryRequest("compute_state", 256, 100000, n_bins=50)
    with pytest.raises(mem.MemoryPlanError) as raised:
        mem.plan(request, 8, 64)
    assert raised.value.largest_term == "kernel"
    assert "kernel-regression bins" in str(raised.value) and "8.0 GB free" in str(raised.value)


def test_half_sets_of_exactly_the_minimum_lower_it():
    assert checks.safe_min_particles(100, [150, 150]) == (100, None)
    value, reason = checks.safe_min_particles(100, [100, 100])
    assert value == 99 and "exactly 100 particles" in reason
    assert checks.safe_min_particles(100, [99, 100])[0] == 98
    assert checks.half_set_sizes([1, 2, 1, 2, 2]) == [2, 3]
    assert checks.half_set_sizes(None, 201) == [100, 101]
    assert checks.half_set_sizes([0, 1, 2, 1]) == [2, 2]  # not all 1/2: RECOVAR splits


def test_latent_dimensions_are_checked_against_particles_and_components():
    assert checks.zdim_errors([1, 2, 4], 300) == []
    assert "needs more particles than the 40" in checks.zdim_errors([2, 40], 40)[0]
    assert "exceeds the 30 principal components" in checks.zdim_errors([40], 300, True)[0]
    assert "exceeds the 200" in checks.zdim_errors([201], 1000)[0]


def test_a_gpu_of_unknown_size_compares_host_memory_only():
    request = _pipeline(256, 100000)
    result = mem.plan(request, mem.GPU_UNKNOWN, 64)
    assert result.fits and "GPU memory unknown here" in result.machine()
    assert result.asked.host_gb == pytest.approx(mem.COMPUTE_RUNTIME_GB + 100000 * 256 ** 2 * 4 / 1e9)
    assert mem.plan(request, mem.GPU_UNKNOWN, 20).added_flags() == ["--lazy"]
