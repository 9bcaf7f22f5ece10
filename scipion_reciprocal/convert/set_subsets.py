"""Create Scipion sets of particles by copying rows between SQLite files.

A subset of a million particles made through the Scipion API builds a million Python
objects; copying the rows with one ``INSERT ... SELECT`` keeps every attribute as it is and
takes seconds.  The caller then wraps the file in a Scipion set object, copies the set-level
information (sampling rate, acquisition...) and registers it as an output.
"""
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np

from .set_tables import SetTableError


def _table_sql(conn, name):
    row = conn.execute("SELECT sql FROM src.sqlite_master WHERE type='table' AND name=?",
                       (name,)).fetchone()
    if row is None:
        raise SetTableError("table %s missing" % name)
    return row[0]


def _load_ids(conn, ids):
    conn.execute("CREATE TEMP TABLE wanted (id INTEGER PRIMARY KEY)")
    conn.executemany("INSERT OR IGNORE INTO wanted VALUES (?)",
                     ((int(i),) for i in np.asarray(ids).ravel()))


def _copy_items(conn, source_prefix, target_prefix):
    """Create <target_prefix>Classes/Objects like the source's and copy the wanted items."""
    for table in ("Classes", "Objects"):
        sql = _table_sql(conn, source_prefix + table)
        conn.execute(sql.replace("CREATE TABLE %s%s" % (source_prefix, table),
                                 "CREATE TABLE main.%s%s" % (target_prefix, table), 1))
    # Names are qualified: the attached source may hold tables of the same name.
    conn.execute("INSERT INTO main.%sClasses SELECT * FROM src.%sClasses" % (target_prefix, source_prefix))
    return conn.execute(
        "INSERT INTO main.%sObjects SELECT o.* FROM src.%sObjects o JOIN wanted w ON o.id = w.id "
        "WHERE o.enabled = 1 ORDER BY o.id" % (target_prefix, source_prefix)).rowcount


def write_item_subset(source_file, target_file, ids, source_prefix=""):
    """Write the items of ``source_file`` whose ids are in ``ids`` as a new set file.

    ``source_prefix`` selects a class's items in a SetOfClasses file (``'Class003_'``).
    Returns the number of items written.  The target must not exist.
    """
    target_file = Path(target_file)
    if target_file.exists():
        raise FileExistsError("%s already exists" % target_file)
    with closing(sqlite3.connect(str(target_file))) as conn:
        conn.execute("ATTACH DATABASE ? AS src", ("file:%s?mode=ro" % Path(source_file).resolve(),))
        conn.execute(_table_sql(conn, "Properties").replace("CREATE TABLE Properties",
                                                            "CREATE TABLE main.Properties", 1))
        _load_ids(conn, ids)
        count = _copy_items(conn, source_prefix, "")
        conn.commit()
    return count


def fill_classes(classes_file, items_file, class_members):
    """Fill the item tables of a SetOfClasses file whose classes already exist.

    ``class_members`` maps class id -> (items prefix in ``items_file``, item ids), the
    prefix selecting a class's table when ``items_file`` is itself a SetOfClasses
    (``'Class003_'``, or ``''`` for a plain set).  Each class gets
    ``ClassNNN_Classes``/``ClassNNN_Objects`` tables and its ``_size`` column is set.
    """
    with closing(sqlite3.connect(str(classes_file))) as conn:
        conn.execute("ATTACH DATABASE ? AS src", ("file:%s?mode=ro" % Path(items_file).resolve(),))
        size_column = conn.execute(
            "SELECT column_name FROM Classes WHERE label_property = '_size'").fetchone()
        if size_column is None:
            raise SetTableError("%s: not a SetOfClasses file (no _size column)" % classes_file)
        for class_id, (items_prefix, ids) in class_members.items():
            conn.execute("DROP TABLE IF EXISTS temp.wanted")
            _load_ids(conn, ids)
            prefix = "Class%03d_" % int(class_id)
            for table in ("Classes", "Objects"):
                conn.execute("DROP TABLE IF EXISTS main.%s%s" % (prefix, table))
            count = _copy_items(conn, items_prefix, prefix)
            conn.execute('UPDATE main.Objects SET "%s" = ? WHERE id = ?' % size_column[0],
                         (count, int(class_id)))
        conn.commit()
