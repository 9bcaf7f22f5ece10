"""Parsing of the RECOVAR protocols' text inputs (latent points, indices, embeddings, logs)."""
import numpy as np
import pytest

from scipion_reciprocal.formats.recovar_results import exception_line, memory_error_line
from scipion_reciprocal.protocols.protocol_recovar_embedding import parseCoordinates
from scipion_reciprocal.protocols.protocol_recovar_state import parseIndices, readPointsFile
from scipion_reciprocal.protocols.protocol_recovar_trajectory import parsePoint


def test_indices_and_points():
    assert parseIndices(" 0, 2,5") == [0, 2, 5]
    assert parseIndices("") == []
    with pytest.raises(ValueError):
        parseIndices("1,a")
    np.testing.assert_array_equal(parsePoint("1.5, -2"), [1.5, -2.0])
    np.testing.assert_array_equal(parsePoint("1.5 -2 3e-1"), [1.5, -2.0, 0.3])
    with pytest.raises(ValueError):
        parsePoint("  ")


def test_points_file(tmp_path):
    path = tmp_path / "points.txt"
    path.write_text("1 2\n3 4\n")
    np.testing.assert_array_equal(readPointsFile(path), [[1, 2], [3, 4]])
    path.write_text("0.5 0.25 1\n")
    assert readPointsFile(path).shape == (1, 3)
    path.write_text("1 nan\n")
    with pytest.raises(ValueError, match="non-finite"):
        readPointsFile(path)


def test_particle_coordinates():
    values = parseCoordinates(["0.1,0.2", "[1, 2]", "3 4"])
    np.testing.assert_allclose(values, [[0.1, 0.2], [1, 2], [3, 4]])
    with pytest.raises(ValueError, match="different lengths"):
        parseCoordinates(["1,2", "1,2,3"])


def test_memory_error_line():
    log = ("INFO start\nTraceback (most recent call last):\n  File x\n"
           "jax.errors.JaxRuntimeError: RESOURCE_EXHAUSTED: Out of memory allocating 82 bytes.\n")
    assert memory_error_line(log).startswith("jax.errors.JaxRuntimeError: RESOURCE_EXHAUSTED")
    assert memory_error_line("INFO all good\n") is None
    # What a data-loader thread gives under a memory limit (seen with ulimit -v).
    assert memory_error_line("  t.start()\nRuntimeError: can't start new thread\n--\n") == \
        "RuntimeError: can't start new thread"


def test_exception_line():
    log = ("WARNING x\nTraceback (most recent call last):\n  File y, line 32\n"
           "    value = np.max([np.sort(ll)[min_images], d])\n"
           "IndexError: index 100 is out of bounds for axis 0 with size 100\n")
    assert exception_line(log) == "IndexError: index 100 is out of bounds for axis 0 with size 100"
    assert exception_line("Traceback\njax.errors.JaxRuntimeError: boom\n") == \
        "jax.errors.JaxRuntimeError: boom"
    assert exception_line("INFO Error estimate: 0.1\n  ValueError: indented\n") is None


def test_stack_paths_through_links_are_one_stack(tmp_path):
    from scipion_reciprocal.convert.classes import resolved_stack_paths
    stack = tmp_path / "relion" / "Extract" / "particles.mrcs"
    stack.parent.mkdir(parents=True)
    stack.write_bytes(b"")
    (tmp_path / "link").symlink_to(tmp_path / "relion")
    paths = [str(stack), str(tmp_path / "link" / "Extract" / "particles.mrcs"), None]
    resolved = resolved_stack_paths(paths)
    assert resolved[0] == resolved[1] == str(stack.resolve())
    assert resolved[2] is None
