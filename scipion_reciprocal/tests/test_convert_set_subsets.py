"""Subsets of Scipion set files copied by SQL (convert/set_subsets.py)."""
import sqlite3
from contextlib import closing

import pytest

from scipion_reciprocal.convert.set_subsets import write_item_subset
from scipion_reciprocal.convert.set_tables import read_set_items

emobj = pytest.importorskip("pwem.objects")


def _particles(path):
    """Ten particles (ids 1..10, image i of stack.mrcs, defocus 1000 i); particle 4 disabled."""
    particles = emobj.SetOfParticles(filename=str(path))
    particles.setSamplingRate(1.5)
    for i in range(1, 11):
        particle = emobj.Particle(location=(i, "stack.mrcs"))
        ctf = emobj.CTFModel()
        ctf.setStandardDefocus(1000.0 * i, 900.0 * i, 10.0)
        particle.setCTF(ctf)
        particle.setEnabled(i != 4)
        particles.append(particle)
    particles.write()
    particles.close()
    return path


def test_subset_rows_are_the_enabled_members_in_id_order(tmp_path):
    source = _particles(tmp_path / "particles.sqlite")
    target = tmp_path / "subset.sqlite"
    count = write_item_subset(source, target, [9, 2, 4, 7, 2, 42])
    assert count == 3  # 4 is disabled, 42 is not in the set, 2 is given twice
    items = read_set_items(target, ["_index", "_filename", "_ctfModel._defocusU"])
    assert items["id"].tolist() == [2, 7, 9]
    assert items["_index"].tolist() == [2, 7, 9]
    assert items["_ctfModel._defocusU"].tolist() == [2000.0, 7000.0, 9000.0]
    with closing(sqlite3.connect(str(source))) as a, closing(sqlite3.connect(str(target))) as b:
        assert b.execute("SELECT * FROM Objects ORDER BY id").fetchall() == a.execute(
            "SELECT * FROM Objects WHERE id IN (2, 7, 9) ORDER BY id").fetchall()
        assert b.execute("SELECT * FROM Classes").fetchall() == a.execute(
            "SELECT * FROM Classes").fetchall()
    with pytest.raises(FileExistsError):
        write_item_subset(source, target, [1])
