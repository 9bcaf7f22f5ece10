"""The SQL on Scipion set files (convert/set_sql.py), its layout check, and the fallback through
Scipion's API (convert/set_api.py): every function gives the same result both ways on set files
written by Scipion."""
import logging
import shutil
import sqlite3
from contextlib import closing

import pandas as pd
import pwem.objects as emobj
import pytest

from scipion_reciprocal.convert import set_sql
from scipion_reciprocal.tests.set_files import write_particle_set

ITEMS = ["_index", "_filename", "_classId", "_micId", "_ctfModel._defocusU",
         "_ctfModel._defocusAngle", "_transform._matrix", "_coordinate._micName"]


def _write_particles(path):
    """Twelve particles (ids 1..12) with CTF, 3D transform and coordinate; particle 5
    disabled (see write_particle_set)."""
    return write_particle_set(path, n=12, disabled=5, alignment=True)


def _write_classes(path, particles_file):
    """The particles classified by their class id (classes 1, 2, 3), as Scipion does it."""
    particles = emobj.SetOfParticles(filename=str(particles_file))
    particles.loadAllProperties()
    classes = emobj.SetOfClasses3D(filename=str(path))
    classes.setImages(particles)
    classes.classifyItems()
    classes.write()
    classes.close()
    return path


@pytest.fixture
def set_files(tmp_path):
    particles = _write_particles(tmp_path / "particles.sqlite")
    return particles, _write_classes(tmp_path / "classes.sqlite", particles)


def _every_function(folder, particles_file, classes_file):
    """What each function of set_sql reads or writes, on copies of the two set files."""
    particles = shutil.copy(particles_file, folder / "particles.sqlite")
    classes = shutil.copy(classes_file, folder / "classes.sqlite")
    out = {"properties": pd.Series(set_sql.read_set_properties(particles)).drop("_mapperPath"),
           "items": set_sql.read_set_items(particles),
           "some items": set_sql.read_set_items(particles, ITEMS + ["_nothing"],
                                                enabled_only=False, skip_missing=True),
           "class rows": set_sql.read_set_items(classes, ["_size", "_representative._filename"]),
           "class items": set_sql.read_class_items(classes, ITEMS),
           "per class": pd.concat(list(set_sql.iter_class_items(classes, ["_index"])))}
    ids, lines = set_sql.read_class_matrix_lines(classes, 2)
    out["matrices"] = pd.DataFrame({"id": ids, "line": lines.splitlines()})
    out["no matrix"] = set_sql.read_class_matrix_lines(classes, 2, label="_other")
    subset = folder / "subset.sqlite"
    out["subset size"] = set_sql.write_item_subset(classes, subset, [8, 2, 5, 11, 99],
                                                   source_prefix="Class003_")
    set_sql.add_item_attributes(subset, [11, 2, 8], {
        "_latent": ("CsvList", ["1.5,-1", "2.5,-2", "3.5,-3"]), "_score": ("Float", [0.1, 0.2, 0.3])})
    out["subset"] = set_sql.read_set_items(subset, ["_index", "_classId", "_score", "_latent"])
    several = folder / "several.sqlite"
    out["several size"] = set_sql.write_item_subset(classes, several, {"Class001_": [3, 12],
                                                                        "Class002_": [4, 7]})
    out["several"] = set_sql.read_set_items(several, ["_index", "_classId"])
    scored = folder / "scored.sqlite"
    out["scored size"] = set_sql.write_item_subset(
        classes, scored, {"Class001_": [3, 12], "Class002_": [4, 7]},
        attributes=([7, 3], {"_score": ("Float", [0.7, 0.3])}))
    out["scored"] = set_sql.read_set_items(scored, ["_index", "_classId", "_score"])
    scipion = emobj.SetOfParticles(filename=str(subset))
    out["subset read by Scipion"] = pd.DataFrame(
        [(p.getObjId(), p.getIndex(), p._score.get(), list(p._latent)) for p in scipion],
        columns=["id", "index", "score", "latent"])
    scipion.close()
    consensus = folder / "consensus.sqlite"
    set_sql.create_set_file(consensus)
    images = emobj.SetOfParticles(filename=str(particles))
    target = emobj.SetOfClasses3D(filename=str(consensus))
    target.setImages(images)
    target.append(emobj.Class3D(objId=10))
    target.write()
    target.close()
    images.close()
    out["classes"] = set_sql.copy_class_rows(consensus, {11: 10, 12: 10})
    set_sql.fill_classes(consensus, classes, {10: ("Class001_", [3, 6, 9, 12]),
                                              11: ("Class002_", [1, 4, 7, 10]),
                                              12: [("Class003_", [2, 11]), ("Class001_", [6])]})
    out["consensus"] = set_sql.read_class_items(consensus, ["_index", "_classId"])
    filled = emobj.SetOfClasses3D(filename=str(consensus))
    out["consensus read by Scipion"] = pd.DataFrame(
        [(c.getObjId(), c.getSize(), sorted(p.getObjId() for p in c)) for c in filled],
        columns=["class", "size", "ids"])
    filled.close()
    return out


def test_every_function_gives_the_same_result_through_scipions_api(set_files, tmp_path, caplog):
    (tmp_path / "sql").mkdir()
    (tmp_path / "api").mkdir()
    assert set_sql.layout_problem(*set_files) is None
    by_sql = _every_function(tmp_path / "sql", *set_files)
    # The SQL results are the expected ones.
    assert by_sql["items"]["id"].tolist() == [1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12]
    assert by_sql["some items"]["enabled"].tolist() == [1, 1, 1, 1, 0] + [1] * 7
    assert "_nothing" not in by_sql["some items"]
    assert by_sql["class items"].groupby("classId")["id"].apply(list).to_dict() == {
        1: [3, 6, 9, 12], 2: [1, 4, 7, 10], 3: [2, 8, 11]}
    assert by_sql["matrices"]["id"].tolist() == [1, 4, 7, 10]
    assert by_sql["matrices"]["line"][1].replace(" ", "").startswith("1.0,0.0,0.0,4.0,")
    assert by_sql["subset size"] == 3
    assert by_sql["subset"]["_score"].tolist() == [0.2, 0.3, 0.1]
    assert by_sql["classes"] == 3
    assert by_sql["several"]["id"].tolist() == [3, 4, 7, 12]
    assert by_sql["scored"]["_score"].fillna(-1).tolist() == [0.3, -1, 0.7, -1]
    assert by_sql["consensus read by Scipion"]["size"].tolist() == [4, 4, 3]
    assert by_sql["consensus read by Scipion"]["ids"].tolist()[2] == [2, 6, 11]
    assert (by_sql["consensus"]["_classId"] == by_sql["consensus"]["classId"]).all()

    with caplog.at_level(logging.WARNING, logger=set_sql.__name__):
        problem = _forced_api_problem()
        by_api = _every_function(tmp_path / "api", *set_files)
    assert "table Objects has no column revision" in problem
    assert [r.getMessage() for r in caplog.records if r.name == set_sql.__name__] == [
        problem + "; Scipion sets are read and written through Scipion's API instead of SQL "
                  "(slower)"]
    assert by_api.keys() == by_sql.keys()
    for name, value in by_sql.items():
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(by_api[name], value, check_like=True, obj=name)
        elif isinstance(value, pd.Series):
            pd.testing.assert_series_equal(by_api[name].sort_index(), value.sort_index())
        else:
            assert by_api[name] == value, name


def _forced_api_problem():
    """Turn the check against the running pyworkflow (see ``api_only``); return its verdict."""
    set_sql.TABLE_COLUMNS["Objects"] += ("revision",)
    set_sql.recheck_pyworkflow_layout()
    return set_sql.pyworkflow_layout_problem()


@pytest.fixture(autouse=True)
def _restore_layout():
    columns = dict(set_sql.TABLE_COLUMNS)
    yield
    set_sql.TABLE_COLUMNS.update(columns)
    set_sql.recheck_pyworkflow_layout()


def test_a_file_laid_out_otherwise_is_read_through_scipions_api(set_files, tmp_path, caplog):
    particles, _ = set_files
    expected = set_sql.read_set_items(particles, ITEMS)
    # Scipion reads the columns in the order of Classes' rows; the SQL reads them by name.
    changed = shutil.copy(particles, tmp_path / "changed.sqlite")
    with closing(sqlite3.connect(changed)) as conn:
        conn.execute("UPDATE Classes SET column_name = 'x02' WHERE label_property = '_filename'")
        conn.commit()
    problem = "%s: Classes maps _filename to columns Objects does not have" % changed
    assert set_sql.layout_problem(changed) == problem
    with caplog.at_level(logging.WARNING, logger=set_sql.__name__):
        read = set_sql.read_set_items(changed, ITEMS)
    pd.testing.assert_frame_equal(read, expected)
    assert [r.getMessage() for r in caplog.records if r.name == set_sql.__name__] == [
        problem + "; Scipion sets are read and written through Scipion's API instead of SQL "
                  "(slower)"]


def test_layout_check_names_what_differs(set_files, tmp_path):
    _, classes = set_files
    assert set_sql.pyworkflow_layout_problem() is None
    broken = shutil.copy(classes, tmp_path / "broken.sqlite")
    with closing(sqlite3.connect(broken)) as conn:
        conn.execute("UPDATE Class002_Classes SET column_name = 'c77' "
                     "WHERE label_property = '_filename'")
        conn.commit()
    assert set_sql.layout_problem(classes, broken) == (
        "%s: Class002_Classes maps _filename to columns Class002_Objects does not have" % broken)
    with closing(sqlite3.connect(broken)) as conn:
        conn.execute("DROP TABLE Class002_Classes")
    assert set_sql.layout_problem(broken) == "%s: no Class002_Classes table" % broken
    empty = tmp_path / "empty.sqlite"
    set_sql.create_set_file(empty)
    assert set_sql.layout_problem(empty) == "%s: no Objects table (an empty set?)" % empty
    assert set_sql.layout_problem(tmp_path / "absent.sqlite") is None  # the reader says so
    with pytest.raises(set_sql.SetTableError, match="absent.sqlite: Scipion set file not found"):
        set_sql.read_set_items(tmp_path / "absent.sqlite")


def test_files_written_by_sql_carry_pyworkflows_schema_version(set_files, tmp_path):
    particles, _ = set_files
    subset = tmp_path / "subset.sqlite"
    set_sql.write_item_subset(particles, subset, [1, 2])
    with closing(sqlite3.connect(subset)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == set_sql.SCHEMA_VERSION
    assert set_sql.layout_problem(subset) is None


def test_worker_processes_take_the_parents_verdict(set_files, tmp_path):
    """Classes written as STAR in worker processes: by SQL, and through Scipion's API when the
    parent process found the layout changed (the workers do not check again)."""
    from scipion_reciprocal.convert.class_star import StarConversions
    from scipion_reciprocal.convert.particles import ImagesInfo
    from scipion_reciprocal.formats.star import read_particles_star

    particles_file, classes = set_files
    particles = emobj.SetOfParticles(filename=str(particles_file))
    particles.loadAllProperties()
    stars = {}
    for way in ("sql", "api"):
        problem = _forced_api_problem() if way == "api" else None
        with StarConversions(2) as conversions:
            assert conversions._pool.submit(set_sql.pyworkflow_layout_problem).result() == problem
            kept, _ = conversions.submit(str(classes), ImagesInfo.of(particles),
                                         tmp_path / ("%s.star" % way), ITEMS,
                                         keep=["id", "classId"]).result()
        stars[way] = read_particles_star(tmp_path / ("%s.star" % way)).particles
        assert kept["id"].tolist() == [1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12]
    pd.testing.assert_frame_equal(stars["api"], stars["sql"])
    assert stars["sql"]["rlnClassNumber"].tolist() == [1 + i % 3 for i in kept["id"]]
