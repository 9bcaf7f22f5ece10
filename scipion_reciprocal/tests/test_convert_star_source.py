"""A RELION job's STAR file as the row source of an imported set (convert/star_source.py)."""
import numpy as np
import pandas as pd

from scipion_reciprocal.convert.star_source import matching_star_table
from scipion_reciprocal.formats.star import write_star

OPTICS = pd.DataFrame({"rlnOpticsGroupName": ["opticsGroup1"], "rlnOpticsGroup": [1],
                       "rlnImagePixelSize": [1.5], "rlnImageSize": [64],
                       "rlnImageDimensionality": [2]})


def _job(tmp_path):
    """A STAR file of 6 particles in two stacks, and the items the import made of it."""
    stacks = ["Extract/job012/mic1.mrcs"] * 3 + ["./Extract/job012/mic2.mrcs"] * 3
    particles = pd.DataFrame({
        "rlnImageName": ["%d@%s" % (i, s) for i, s in zip([1, 2, 3, 1, 2, 3], stacks)],
        "rlnClassNumber": [2, 1, 2, 3, 1, 1], "rlnAngleRot": np.arange(6) * 10.5,
        "rlnOpticsGroup": 1})
    path = tmp_path / "Class3D" / "job085" / "run_it025_data.star"
    path.parent.mkdir(parents=True)
    write_star(path, {"optics": OPTICS, "particles": particles})
    project = tmp_path / "relion"
    items = pd.DataFrame({
        "id": np.arange(1, 7), "classId": particles["rlnClassNumber"].to_numpy(),
        "_index": [1, 2, 3, 1, 2, 3],
        "_filename": [str(project / ("Extract/job012/mic%d.mrcs" % (1 + (i >= 3))))
                      for i in range(6)]})
    return path, items, project


def test_rows_of_the_imported_job_are_the_source(tmp_path):
    path, items, project = _job(tmp_path)
    table, reason = matching_star_table(path, items, project)
    assert reason is None
    written = table.write_subset(tmp_path / "class1.star", np.flatnonzero(items["classId"] == 1))
    assert written == 3
    lines = path.read_text().splitlines()
    body = [line for line in tmp_path.joinpath("class1.star").read_text().splitlines()
            if "@Extract" in line or "@./Extract" in line]
    assert body == [lines[i] for i in range(len(lines)) if "@" in lines[i]
                    and lines[i].split()[1] == "1"]


def test_changed_items_are_not_matched(tmp_path):
    path, items, project = _job(tmp_path)
    cases = {
        "rows": items.iloc[:5],  # a subset: ids no longer 1..N of the file's rows
        "classes": items.assign(classId=[1, 1, 2, 3, 1, 1]),
        "image names": items.assign(_index=[1, 2, 3, 1, 3, 2]),
        "image names ": items.assign(_filename=items["_filename"].str.replace("mic2", "mic3")),
    }
    for expected, changed in cases.items():
        table, reason = matching_star_table(path, changed, project)
        assert table is None and expected.strip() in reason, (expected, reason)
    table, reason = matching_star_table(path, items, tmp_path / "elsewhere")
    assert table is None and "image names" in reason
    table, reason = matching_star_table(tmp_path / "missing.star", items, project)
    assert table is None and "missing.star" in reason
