"""The STAR writer on large particle tables: numbers as printf writes them, one row length."""
import shlex

import numpy as np
import pandas as pd
import pytest

from scipion_reciprocal.formats.star import StarTable, read_particles_star, write_particles_star

OPTICS = pd.DataFrame({"rlnOpticsGroupName": ["opticsGroup1"], "rlnOpticsGroup": [1],
                       "rlnVoltage": [300.0], "rlnSphericalAberration": [2.7],
                       "rlnAmplitudeContrast": [0.1], "rlnImagePixelSize": [1.77],
                       "rlnImageSize": [128], "rlnImageDimensionality": [2]})
SPECIAL = [0.0, -0.0, 123.4565, -0.5, 0.5, 12.0000005, 7.1234565, 999999.9999995,
           -999999.9999995, 0.001, -0.001, 0.0010005, 1.0000005, 2.5, 3.0000015, np.nan, 1e-5,
           -2.5e-7, 2e7, -np.inf, 1e5]


def _expected(value):
    """'%.6f', or '%.6e' for values that '%.6f' would not show well (as formats.star)."""
    if value != value or abs(value) == np.inf:
        return str(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return "%.6e" % value
    return "%.6f" % value


def _rows(path):
    text = path.read_text().split("data_particles")[1]
    return [shlex.split(line) for line in text.splitlines()
            if line.strip() and not line.startswith(("_", "loop_"))]


def test_numbers_are_written_as_printf_writes_them(tmp_path):
    rng = np.random.default_rng(3)
    values = np.concatenate([SPECIAL, rng.uniform(-1000, 1000, 20000),
                             np.round(rng.uniform(-1000, 1000, 20000), 7)])
    ints = rng.integers(-10 ** 12, 10 ** 12, len(values))
    table = pd.DataFrame({"rlnImageName": ["%06d@Extract/job012/x.mrcs" % (i + 1)
                                           for i in range(len(values))],
                          "rlnDefocusU": values, "rlnRandomSubset": ints, "rlnOpticsGroup": 1})
    path = tmp_path / "p.star"
    write_particles_star(path, table, OPTICS)
    rows = _rows(path)
    assert [r[1] for r in rows] == [_expected(v) for v in values.tolist()]
    assert [int(r[2]) for r in rows] == ints.tolist()
    assert [r[0] for r in rows] == table["rlnImageName"].tolist()
    # Every row has one length, so subsets are copied as blocks of bytes.
    assert len({len(line) for line in path.read_text().split("data_particles")[1].splitlines()
                if "@Extract" in line}) == 1
    source = StarTable.open(path)
    source.write_subset(tmp_path / "s.star", [2, 0])
    subset = read_particles_star(tmp_path / "s.star")
    assert subset.particles["rlnImageName"].tolist() == ["000003@Extract/job012/x.mrcs",
                                                         "000001@Extract/job012/x.mrcs"]
    assert subset.optics["rlnImagePixelSize"].tolist() == [1.77]


def test_text_is_quoted_where_star_needs_it_and_reads_back(tmp_path):
    table = pd.DataFrame({"rlnImageName": ["000001@a b/x.mrcs", "000002@x.mrcs", "000003@é.mrcs"],
                          "rlnMicrographName": ["mic_1", None, "_odd"],
                          "rlnClassNumber": [1, 2, 3], "rlnOpticsGroup": 1})
    path = tmp_path / "q.star"
    write_particles_star(path, table, OPTICS)
    rows = _rows(path)
    assert [r[0] for r in rows] == table["rlnImageName"].tolist()
    assert [r[1] for r in rows] == ["mic_1", "", "_odd"]
    back = read_particles_star(path).particles
    assert back["rlnImageName"].tolist() == table["rlnImageName"].tolist()
    assert back["rlnClassNumber"].tolist() == [1, 2, 3]


def test_empty_table_and_unwritable_text(tmp_path):
    empty = pd.DataFrame({"rlnImageName": pd.Series([], dtype=object),
                          "rlnDefocusU": pd.Series([], dtype=float), "rlnOpticsGroup": 1})
    write_particles_star(tmp_path / "e.star", empty, OPTICS)
    assert StarTable.open(tmp_path / "e.star").columns == list(empty.columns)
    bad = pd.DataFrame({"rlnImageName": ["a\tb"], "rlnOpticsGroup": [1]})
    with pytest.raises(ValueError, match="cannot be written"):
        write_particles_star(tmp_path / "b.star", bad, OPTICS)
    assert not (tmp_path / "b.star").exists()
