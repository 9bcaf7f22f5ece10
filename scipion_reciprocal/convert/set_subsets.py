"""Create Scipion sets of particles by copying rows between SQLite files.

A subset of a million particles made through the Scipion API builds a million Python
objects; copying the rows with one ``INSERT ... SELECT`` keeps every attribute as it is and
takes seconds.  The caller then wraps the file in a Scipion set object, copies the set-level
information (sampling rate, acquisition...) and registers it as an output.  Classes are
added the same way: the caller appends a few through the Scipion API, the others are copies
of their rows (:func:`copy_class_rows`), then :func:`fill_classes` copies their items.
"""
import json
import sqlite3
from contextlib import closing
from itertools import repeat
from pathlib import Path

import numpy as np

from .set_tables import SetTableError


def _table_sql(conn, name):
    row = conn.execute("SELECT sql FROM src.sqlite_master WHERE type='table' AND name=?",
                       (name,)).fetchone()
    if row is None:
        raise SetTableError("table %s missing" % name)
    return row[0]


#: Page size of the set files written here: rows of a few dozen attributes copy a quarter
#: faster into 16 KiB pages than into SQLite's default 4 KiB.
PAGE_SIZE = 16384


def create_set_file(path):
    """Create an empty SQLite file with :data:`PAGE_SIZE` pages, for a set the caller then
    writes through Scipion and fills here (:func:`fill_classes`)."""
    with closing(sqlite3.connect(str(path))) as conn:
        conn.execute("PRAGMA page_size = %d" % PAGE_SIZE)
        conn.execute("VACUUM")  # writes the header, and with it the page size


def _new_file_pragmas(conn):
    """No rollback journal, no fsync: for files the caller writes from scratch (a failed
    step removes or rewrites them).  A new file gets :data:`PAGE_SIZE` pages (ignored for
    a file that already holds tables)."""
    conn.execute("PRAGMA main.page_size = %d" % PAGE_SIZE)
    conn.execute("PRAGMA main.journal_mode = OFF")
    conn.execute("PRAGMA main.synchronous = OFF")


def _create_members(conn):
    conn.execute("DROP TABLE IF EXISTS temp.members")
    conn.execute("CREATE TEMP TABLE members (class INTEGER, id INTEGER, PRIMARY KEY (class, id))"
                 " WITHOUT ROWID")


def _add_members(conn, member_class, ids):
    """Add the (class, item id) pairs of one class to ``temp.members``."""
    ids = np.asarray(ids, dtype=np.int64).ravel().tolist()
    try:  # one JSON text parsed by SQLite: several times faster than one insert per id
        conn.execute("INSERT OR IGNORE INTO temp.members SELECT ?, value FROM json_each(?)",
                     (int(member_class), json.dumps(ids)))
    except sqlite3.OperationalError:  # SQLite built without JSON functions
        conn.executemany("INSERT OR IGNORE INTO temp.members VALUES (?, ?)",
                         zip(repeat(int(member_class)), ids))


def _copy_items(conn, source_prefix, target_prefix, member_class=0, schemas=None,
                class_id=None, create=True):
    """Create <target_prefix>Classes/Objects like the source's (unless ``create`` is False:
    they exist) and copy the member items (``schemas`` caches what is read of the source
    tables between calls).  With ``class_id``, the copies' ``_classId`` (when they have one)
    is set to it."""
    schemas = {} if schemas is None else schemas
    if create:
        for table in ("Classes", "Objects"):
            key = source_prefix + table
            if key not in schemas:
                schemas[key] = _table_sql(conn, key)
            conn.execute(schemas[key].replace("CREATE TABLE %s" % key,
                                              "CREATE TABLE main.%s%s" % (target_prefix, table),
                                              1))
        # Names are qualified: the attached source may hold tables of the same name.
        conn.execute("INSERT INTO main.%sClasses SELECT * FROM src.%sClasses"
                     % (target_prefix, source_prefix))
    else:
        _check_same_columns(conn, source_prefix, target_prefix)
    values = "o.*"
    if class_id is not None:
        class_column = _class_id_column(conn, source_prefix, schemas)
        values = ", ".join(str(int(class_id)) if column == class_column else 'o."%s"' % column
                           for column in _columns(conn, source_prefix, schemas))
    # Members in id order, each item looked up by id (CROSS JOIN keeps that loop order):
    # a third faster than ``id IN (SELECT ...)``, and no sort.
    return conn.execute(
        "INSERT INTO main.%sObjects SELECT %s FROM temp.members AS m CROSS JOIN "
        "src.%sObjects AS o ON o.id = m.id WHERE m.class = ? AND o.enabled = 1 ORDER BY m.id"
        % (target_prefix, values, source_prefix), (member_class,)).rowcount


def _check_same_columns(conn, source_prefix, target_prefix):
    """Items of one more source table go to a target table: their columns must mean the
    same attributes."""
    query = "SELECT column_name, label_property, class_name FROM %s.%sClasses ORDER BY column_name"
    source = conn.execute(query % ("src", source_prefix)).fetchall()
    target = conn.execute(query % ("main", target_prefix)).fetchall()
    if source != target:
        raise SetTableError("%sObjects: its items have other attributes than those copied "
                            "before into %sObjects" % (source_prefix, target_prefix))


def _columns(conn, prefix, schemas):
    """Column names of the source's <prefix>Objects table, in order."""
    key = prefix + "Objects columns"
    if key not in schemas:
        schemas[key] = [row[1] for row in conn.execute("PRAGMA src.table_info(%sObjects)"
                                                       % prefix)]
    return schemas[key]


def _class_id_column(conn, prefix, schemas):
    """The column holding the items' ``_classId`` in the source's <prefix>Objects, or None."""
    key = prefix + "_classId"
    if key not in schemas:
        row = conn.execute("SELECT column_name FROM src.%sClasses WHERE label_property = "
                           "'_classId'" % prefix).fetchone()
        schemas[key] = row[0] if row else None
    return schemas[key]


def write_item_subset(source_file, target_file, ids, source_prefix=""):
    """Write the items of ``source_file`` whose ids are in ``ids`` as a new set file.

    ``source_prefix`` selects a class's items in a SetOfClasses file (``'Class003_'``).
    ``ids`` may instead map several prefixes to the ids taken from each (``source_prefix``
    unused): items of several classes of one SetOfClasses file into one set.
    Returns the number of items written.  The target must not exist.
    """
    target_file = Path(target_file)
    if target_file.exists():
        raise FileExistsError("%s already exists" % target_file)
    parts = list(ids.items()) if isinstance(ids, dict) else [(source_prefix, ids)]
    if not parts:
        raise ValueError("%s: no class to copy items from" % target_file)
    with closing(sqlite3.connect(str(target_file))) as conn:
        _new_file_pragmas(conn)
        conn.execute("ATTACH DATABASE ? AS src", ("file:%s?mode=ro" % Path(source_file).resolve(),))
        conn.execute(_table_sql(conn, "Properties").replace("CREATE TABLE Properties",
                                                            "CREATE TABLE main.Properties", 1))
        _create_members(conn)
        count, schemas = 0, {}
        for number, (prefix, part) in enumerate(parts):
            _add_members(conn, number, part)
            count += _copy_items(conn, prefix, "", member_class=number, schemas=schemas,
                                 create=number == 0)
        conn.commit()
    return count


def copy_class_rows(classes_file, copies):
    """Add classes to a SetOfClasses file as copies of classes it holds.

    ``copies`` maps a new class id to the id of the class whose row (representative,
    acquisition, every column but the id) it copies.  The set's ``_size`` property is
    updated; items are added with :func:`fill_classes`.  Returns the number of classes.
    """
    with closing(sqlite3.connect(str(classes_file))) as conn:
        columns = ", ".join('"%s"' % row[1] for row in conn.execute("PRAGMA table_info(Objects)")
                            if row[1] != "id")
        conn.executemany("INSERT INTO Objects (id, %s) SELECT ?, %s FROM Objects WHERE id = ?"
                         % (columns, columns),
                         [(int(new), int(old)) for new, old in copies.items()])
        count = conn.execute("SELECT COUNT(*) FROM Objects").fetchone()[0]
        conn.execute("UPDATE Properties SET value = ? WHERE key = '_size'", (str(count),))
        conn.commit()
    return count


def fill_classes(classes_file, items_file, class_members):
    """Fill the item tables of a SetOfClasses file whose classes already exist.

    ``class_members`` maps class id -> (items prefix in ``items_file``, item ids), the
    prefix selecting a class's table when ``items_file`` is itself a SetOfClasses
    (``'Class003_'``, or ``''`` for a plain set), or -> a list of such pairs (items of
    several source classes in one class).  Each class gets
    ``ClassNNN_Classes``/``ClassNNN_Objects`` tables and its ``_size`` column is set; the
    items' ``_classId`` becomes the class id.  The
    file is written without journal (see :func:`_new_file_pragmas`): fill the classes of a
    set the caller has just created.
    """
    parts = {class_id: members if isinstance(members, list) else [members]
             for class_id, members in class_members.items()}
    with closing(sqlite3.connect(str(classes_file))) as conn:
        _new_file_pragmas(conn)
        conn.execute("ATTACH DATABASE ? AS src", ("file:%s?mode=ro" % Path(items_file).resolve(),))
        size_column = conn.execute(
            "SELECT column_name FROM Classes WHERE label_property = '_size'").fetchone()
        if size_column is None:
            raise SetTableError("%s: not a SetOfClasses file (no _size column)" % classes_file)
        _create_members(conn)
        numbers = {}
        for class_id, members in parts.items():
            for k, (_, ids) in enumerate(members):
                numbers[(class_id, k)] = len(numbers)
                _add_members(conn, numbers[(class_id, k)], ids)
        schemas = {}
        for class_id, members in parts.items():
            prefix = "Class%03d_" % int(class_id)
            for table in ("Classes", "Objects"):
                conn.execute("DROP TABLE IF EXISTS main.%s%s" % (prefix, table))
            count = 0
            for k, (items_prefix, _) in enumerate(members):
                count += _copy_items(conn, items_prefix, prefix, numbers[(class_id, k)], schemas,
                                     class_id=int(class_id), create=k == 0)
            conn.execute('UPDATE main.Objects SET "%s" = ? WHERE id = ?' % size_column[0],
                         (count, int(class_id)))
        conn.commit()


#: Column types Scipion declares for its scalar attribute classes (others are text).
_SQL_TYPES = {"Float": "REAL", "Integer": "INTEGER", "Boolean": "INTEGER"}


def add_item_attributes(set_file, ids, attributes):
    """Add attributes to the items of a Scipion set file, one value per item.

    ``attributes`` maps an attribute name to (Scipion class name, values in the order of
    ``ids``); values are stored as Scipion stores them (text for a CsvList: ``'1.5,-0.25'``).
    Each attribute becomes a new column of ``Objects`` described in ``Classes``, so Scipion
    reads it like one it wrote itself; items not in ``ids`` get none.
    """
    ids = np.asarray(ids, dtype=np.int64).ravel().tolist()
    with closing(sqlite3.connect(str(set_file))) as conn:
        _new_file_pragmas(conn)
        used = {row[0] for row in conn.execute("SELECT column_name FROM Classes")}
        taken = {row[0] for row in conn.execute("SELECT label_property FROM Classes")}
        number = 1
        for name, (class_name, values) in attributes.items():
            if name in taken:
                raise SetTableError("%s: items already have an attribute %s" % (set_file, name))
            if len(values) != len(ids):
                raise ValueError("%s: %d values for %d items" % (name, len(values), len(ids)))
            while "c%02d" % number in used:
                number += 1
            column = "c%02d" % number
            used.add(column)
            conn.execute("INSERT INTO Classes (label_property, column_name, class_name) "
                         "VALUES (?, ?, ?)", (name, column, class_name))
            conn.execute('ALTER TABLE Objects ADD COLUMN "%s" %s DEFAULT NULL'
                         % (column, _SQL_TYPES.get(class_name, "TEXT")))
            conn.executemany('UPDATE Objects SET "%s" = ? WHERE id = ?' % column,
                             zip(values, ids))
        conn.commit()
