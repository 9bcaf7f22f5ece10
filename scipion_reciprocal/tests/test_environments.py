"""Backend environment declarations: the install chain, its marker, activation and checks."""
import subprocess
import sys

import pytest

from scipion_reciprocal.environments import (BACKENDS, BackendEnvironment, backend_command,
                                             get_backend)


def _toy_backend(requirement, selfcheck="print('ok')"):
    return BackendEnvironment(
        name="toy", version="1.0", description="test backend", activation_var="TOY_ENV_ACTIVATION",
        cpu_requirements=(requirement,), cuda_requirements=(requirement,), import_name="pip",
        selfcheck_code=selfcheck)


def _run(command):
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True)


def test_declared_backends_are_pinned():
    assert set(BACKENDS) == {"recovar", "classifier"}
    assert BACKENDS["recovar"].cpu_requirements == ("recovar==1.0.5",)
    assert "jax[cuda12]==0.9.0.1" in BACKENDS["recovar"].cuda_requirements
    assert BACKENDS["classifier"].cpu_requirements[0] == "tensorflow-cpu==2.21.0"
    assert BACKENDS["classifier"].cuda_requirements[0] == "tensorflow[and-cuda]==2.21.0"
    for backend in BACKENDS.values():
        assert all("==" in r for r in backend.cpu_requirements + backend.cuda_requirements)


def test_install_chain_marks_success_only_at_the_end(tmp_path):
    backend = _toy_backend("pip")
    command = backend.install_command(tmp_path, use_conda=False, use_cuda=False)
    assert " ; " not in command and command.endswith("touch %s" % backend.marker(tmp_path))
    result = _run(command)
    assert result.returncode == 0, result.stderr
    assert backend.marker(tmp_path).exists()
    assert backend.missing_reason(tmp_path, backend.default_activation(tmp_path)) is None
    # The default activation really selects the new environment's python.
    probe = _run("%s && python -c 'import sys; print(sys.prefix)'" % backend.default_activation(tmp_path))
    assert probe.stdout.strip() == str(backend.prefix(tmp_path))


def test_failed_install_leaves_no_marker(tmp_path):
    backend = _toy_backend(str(tmp_path / "no-such-package-dir"))
    result = _run(backend.install_command(tmp_path, use_conda=False, use_cuda=False))
    assert result.returncode != 0
    assert not backend.marker(tmp_path).exists()
    reason = backend.missing_reason(tmp_path, backend.default_activation(tmp_path))
    assert "not installed" in reason
    assert "python -m scipion installb toy" in reason
    assert "scipion-reciprocal install-backend toy" in reason


def test_failed_selfcheck_leaves_no_marker(tmp_path):
    backend = _toy_backend("pip", selfcheck="import no_such_module_here")
    assert _run(backend.install_command(tmp_path, use_conda=False, use_cuda=False)).returncode != 0
    assert not backend.marker(tmp_path).exists()


def test_custom_activation_is_probed(tmp_path):
    backend = _toy_backend("pip")
    # The test's own interpreter provides 'pip': a custom activation pointing at it works ...
    good = "export PATH=%s:$PATH" % sys.executable.rsplit("/", 1)[0]
    assert backend.missing_reason(tmp_path, good) is None
    # ... and one that fails names the variable and the install command.
    reason = backend.missing_reason(tmp_path, "false")
    assert "TOY_ENV_ACTIVATION" in reason and "installb toy" in reason


def test_backend_command_sets_visible_gpus():
    assert backend_command("act", "prog.py", "0,2") == "act && CUDA_VISIBLE_DEVICES=0,2 python prog.py"
    assert backend_command("act", "prog.py", None) == "act && CUDA_VISIBLE_DEVICES='' python prog.py"
    # Scipion's placeholder for the GPUs it assigns, filled in by runJob
    assert backend_command("act", "prog.py", "%(GPU)s") == "act && CUDA_VISIBLE_DEVICES=%(GPU)s python prog.py"


def test_unknown_backend_lists_known_ones():
    with pytest.raises(KeyError, match="classifier, recovar"):
        get_backend("cryodrgn")
