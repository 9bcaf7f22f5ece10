"""Scipion set files: subsets copied by SQL (convert/set_sql.py), classes read and
converted to STAR a class at a time, in worker processes or not (convert/set_sql.py,
convert/class_star.py)."""
import sqlite3
from contextlib import closing

import pytest

import numpy as np
import pandas as pd

from scipion_reciprocal.convert.class_star import StarConversions
from scipion_reciprocal.convert.particles import ImagesInfo, items_to_relion
from scipion_reciprocal.convert.set_sql import (SetTableError, add_item_attributes,
                                                fill_classes, read_class_items, read_set_items,
                                                write_item_subset)
from scipion_reciprocal.formats.star import read_particles_star
from scipion_reciprocal.tests.set_files import write_particle_set

emobj = pytest.importorskip("pwem.objects")


def _particles(path):
    """Ten particles (ids 1..10, image i of stack.mrcs, defocus 1000 i, class 1 + i % 3);
    particle 4 disabled."""
    return write_particle_set(path)


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


def test_attributes_added_by_sql_read_back_through_scipion(tmp_path):
    source = _particles(tmp_path / "particles.sqlite")
    target = tmp_path / "subset.sqlite"
    write_item_subset(source, target, [3, 1, 2])
    add_item_attributes(target, [3, 1, 2], {"_latent": ("CsvList", ["3.5,-3", "1.5,-1", "2.5,-2"]),
                                            "_score": ("Float", [0.3, 0.1, 0.2])})
    particles = emobj.SetOfParticles(filename=str(target))
    read = {p.getObjId(): (list(p._latent), p._score.get(), p.getCTF().getDefocusU())
            for p in particles.iterItems()}
    # Scipion's CsvList keeps text items; the other attributes are untouched.
    assert read == {1: (["1.5", "-1"], 0.1, 1000.0), 2: (["2.5", "-2"], 0.2, 2000.0),
                    3: (["3.5", "-3"], 0.3, 3000.0)}
    particles.close()
    with pytest.raises(SetTableError, match="already have an attribute _score"):
        add_item_attributes(target, [1], {"_score": ("Float", [1.0])})
    with pytest.raises(ValueError, match="_other: 1 values for 3 items"):
        add_item_attributes(target, [1, 2, 3], {"_other": ("Float", [1.0])})


def test_filled_classes_hold_their_members_with_the_class_id(tmp_path):
    source = _particles(tmp_path / "particles.sqlite")
    particles = emobj.SetOfParticles(filename=str(source))
    particles.loadAllProperties()
    classes = emobj.SetOfClasses3D(filename=str(tmp_path / "classes.sqlite"))
    classes.setImages(particles)
    for class_id in (7, 8):
        cls = emobj.Class3D(objId=class_id)
        cls.copyInfo(particles)
        classes.append(cls)
    classes.write()
    classes.close()
    fill_classes(classes.getFileName(), source, {7: ("", [1, 2, 3]), 8: ("", [4, 5, 6, 9])})
    items = read_class_items(classes.getFileName(), ["_index", "_classId"])
    # 4 is disabled; the items' own classIds (1 + i % 3) become their new class's.
    assert items.groupby("classId")["_index"].apply(list).to_dict() == {7: [1, 2, 3],
                                                                         8: [5, 6, 9]}
    assert (items["_classId"] == items["classId"]).all()
    sizes = {cls.getObjId(): cls.getSize()
             for cls in emobj.SetOfClasses3D(filename=classes.getFileName())}
    assert sizes == {7: 3, 8: 3}


def _classes(tmp_path, source):
    """A SetOfClasses3D of the ten particles by their class id (1 + i % 3)."""
    particles = emobj.SetOfParticles(filename=str(source))
    particles.loadAllProperties()
    classes = emobj.SetOfClasses3D(filename=str(tmp_path / "classes.sqlite"))
    classes.setImages(particles)
    classes.classifyItems()
    classes.write()
    classes.close()
    return classes.getFileName()


def test_attributes_added_while_copying_equal_those_added_after(tmp_path):
    """write_item_subset(attributes=...) writes the set add_item_attributes makes of the
    copied subset (same Classes rows, columns and values; items without a value NULL),
    from one class or several."""
    classes = _classes(tmp_path, _particles(tmp_path / "particles.sqlite"))
    attributes = ([9, 3, 5], {"_score": ("Float", [0.9, 0.3, 0.5]),
                              "_latent": ("CsvList", ["9,-9", "3,-3", "5,-5"])})
    expected = {"Class001_": {3: 0.3, 9: 0.9}, "Class003_": {5: 0.5, 8: None}}
    for ids in ({"Class001_": [3, 9], "Class003_": [5, 8]}, {"Class001_": [9, 3, 6]}):
        after, during = tmp_path / "after.sqlite", tmp_path / "during.sqlite"
        for path in (after, during):
            if path.exists():
                path.unlink()
        write_item_subset(classes, after, ids)
        add_item_attributes(after, *attributes)
        assert write_item_subset(classes, during, ids, attributes=attributes) == len(
            read_set_items(after))
        with closing(sqlite3.connect(str(after))) as a, \
                closing(sqlite3.connect(str(during))) as b:
            for query in ("SELECT * FROM Classes ORDER BY id", "SELECT * FROM Objects ORDER BY id",
                          "SELECT sql FROM sqlite_master WHERE name = 'Objects'"):
                assert b.execute(query).fetchall() == a.execute(query).fetchall()
        read = read_set_items(during, ["_score"])
        scores = {i: None if np.isnan(v) else v for i, v in zip(read["id"], read["_score"])}
        assert scores == ({**expected["Class001_"], **expected["Class003_"]} if len(ids) == 2
                          else {3: 0.3, 6: None, 9: 0.9})


def test_items_of_several_classes_in_one_subset_and_one_class(tmp_path):
    classes = _classes(tmp_path, _particles(tmp_path / "particles.sqlite"))
    target = tmp_path / "subset.sqlite"
    # class 1: 3, 6, 9; class 2: 1, 4 (disabled), 7, 10; class 3: 2, 5, 8
    assert write_item_subset(classes, target, {"Class002_": [10, 4, 1], "Class003_": [5, 8, 3]}) == 4
    items = read_set_items(target, ["_index", "_classId"])
    assert items["id"].tolist() == [1, 5, 8, 10] and items["_classId"].tolist() == [2, 3, 3, 2]
    with pytest.raises(ValueError, match="no class to copy items from"):
        write_item_subset(classes, tmp_path / "none.sqlite", {})
    merged = emobj.SetOfClasses3D(filename=str(tmp_path / "merged.sqlite"))
    merged.setImages(emobj.SetOfParticles(filename=str(tmp_path / "particles.sqlite")))
    for class_id in (1, 2):
        merged.append(emobj.Class3D(objId=class_id))
    merged.write()
    merged.close()
    fill_classes(merged.getFileName(), classes, {1: [("Class001_", [3, 9]), ("Class003_", [2])],
                                                 2: ("Class002_", [7])})
    read = read_class_items(merged.getFileName(), ["_index", "_classId"])
    assert read.groupby("classId")["_index"].apply(sorted).to_dict() == {1: [2, 3, 9], 2: [7]}
    assert (read["_classId"] == read["classId"]).all()
    sizes = {cls.getObjId(): cls.getSize()
             for cls in emobj.SetOfClasses3D(filename=merged.getFileName())}
    assert sizes == {1: 3, 2: 1}


@pytest.mark.parametrize("processes", [1, 2])
def test_classes_written_as_star_a_class_at_a_time_equal_the_whole_conversion(tmp_path,
                                                                              processes):
    particles = emobj.SetOfParticles(filename=str(_particles(tmp_path / "particles.sqlite")))
    particles.loadAllProperties()  # sampling rate, dimensions, acquisition
    classes = emobj.SetOfClasses3D(filename=str(tmp_path / "classes.sqlite"))
    classes.setImages(particles)
    classes.classifyItems()
    classes.write()
    classes.close()
    attributes = ["_index", "_filename", "_ctfModel._defocusU", "_ctfModel._defocusV",
                  "_ctfModel._defocusAngle", "_ctfModel._phaseShift", "_rlnClassNumber"]
    with StarConversions(processes) as conversions:
        kept, _ = conversions.submit(classes.getFileName(), ImagesInfo.of(particles),
                                     tmp_path / "classes.star", attributes,
                                     keep=["id", "classId", "_index", "_micName"]).result()
    items = read_class_items(classes.getFileName(), attributes, skip_missing=True)
    items = items.sort_values("id").reset_index(drop=True)
    expected, expected_optics = items_to_relion(items, particles)
    ids = kept["id"]
    assert ids.tolist() == [1, 2, 3, 5, 6, 7, 8, 9, 10]  # by id, 4 disabled
    assert kept.columns.tolist() == ["id", "classId", "_index"]  # the items have no _micName
    assert kept["classId"].tolist() == [1 + i % 3 for i in ids]
    assert kept["_index"].tolist() == ids.tolist()
    star = read_particles_star(tmp_path / "classes.star")
    table = star.particles
    assert table["rlnClassNumber"].tolist() == [1 + i % 3 for i in ids]
    assert table["rlnImageName"].tolist() == ["%06d@stack.mrcs" % i for i in ids]
    columns = expected.columns.drop(["scipionId", "rlnOpticsGroup"]).tolist()
    assert table.columns.tolist() == columns + ["rlnClassNumber", "rlnOpticsGroup"]
    for column in expected.columns.drop(["scipionId", "rlnImageName"]):
        np.testing.assert_allclose(table[column], expected[column], atol=1e-6)
    pd.testing.assert_frame_equal(star.optics, expected_optics, check_dtype=False)
