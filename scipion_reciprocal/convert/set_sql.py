"""All SQL on Scipion's set files: sets read into pandas, subsets and classes made by copying rows.

Iterating a Scipion set builds one Python object per item (minutes for a million particles);
these functions run one query per table instead, and copy rows between files with
``INSERT ... SELECT`` so that every attribute is kept as it is.

The layout they rely on (pyworkflow's ``SqliteFlatDb``): ``Properties(key, value)`` holds the
set's own attributes; ``Classes(id, label_property, column_name, class_name)`` maps each item
attribute (``_ctfModel._defocusU``) to a column of ``Objects`` (``c05``) and names its Scipion
class (``Float``), the row ``self`` naming the item class; ``Objects(id, enabled, label,
comment, creation, c01, ...)`` holds the items.  A SetOfClasses keeps its classes in
``Objects`` and the items of class N in ``ClassNNN_Classes``/``ClassNNN_Objects``.

That layout is checked before the first use (on a set that the running pyworkflow writes in a
temporary folder), and every file is checked when a function opens it.  Where either differs,
the function runs through Scipion's API instead (:mod:`.set_api`: same results, much slower)
and a log line says why.
"""
import functools
import gc
import inspect
import json
import logging
import os
import re
import sqlite3
import tempfile
from contextlib import closing, contextmanager
from itertools import repeat
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

#: Columns each table must have (item attribute columns come on top, as ``Classes`` maps them).
TABLE_COLUMNS = {"Properties": ("key", "value"),
                 "Classes": ("id", "label_property", "column_name", "class_name"),
                 "Objects": ("id", "enabled", "label", "comment", "creation")}
#: ``Classes`` label of the row that names the item class (it has no column in ``Objects``).
SELF = "self"
#: Schema version pyworkflow stores in a set file's ``PRAGMA user_version``.
SCHEMA_VERSION = 1
#: Table prefix of the items of class N in a SetOfClasses file.
CLASS_PREFIX = "Class%03d_"
_CLASS_TABLE = re.compile(r"^(Class\d+_)Objects$")
_NO_BRACKETS = {ord("["): None, ord("]"): None}
#: Column types of scalar attribute classes (pyworkflow's ``SqliteFlatDb.CLASS_MAP``; other
#: classes are text).
SQL_TYPES = {"Float": "REAL", "Integer": "INTEGER", "Boolean": "INTEGER"}
#: Page size of the set files written here: rows of a few dozen attributes copy a quarter
#: faster into 16 KiB pages than into SQLite's default 4 KiB.
PAGE_SIZE = 16384


class SetTableError(ValueError):
    """A Scipion set file that cannot be read as expected (the message names the file)."""


# ----------------------------------------------------------------------------- layout check
_VERDICT = []     # [what pyworkflow_layout_problem found] once checked in this process
_CHECKED = {}     # (file, mtime, size) -> what _layout_problem found in it
_LOGGED = set()   # the reasons already logged

def _connect(path):
    path = Path(path)
    if not path.exists():
        raise SetTableError("%s: Scipion set file not found" % path)
    # Read-only URI: never create or lock-upgrade a set file of another protocol.
    return closing(sqlite3.connect("file:%s?mode=ro" % path.resolve(), uri=True))


def _layout_problem(conn):
    """What in the open set file differs from the layout described above, or None."""
    columns = {}
    for table, column in conn.execute(
            "SELECT m.name, p.name FROM sqlite_master AS m JOIN pragma_table_info(m.name) AS p "
            "WHERE m.type = 'table'"):
        columns.setdefault(table, set()).add(column)
    if "Objects" not in columns:
        return "no Objects table (an empty set?)"
    prefixes = [""] + sorted(m.group(1) for m in map(_CLASS_TABLE.match, columns) if m)
    for table in ["Properties"] + [p + t for p in prefixes for t in ("Classes", "Objects")]:
        kind = table[table.find("_") + 1:]
        if table not in columns:
            return "no %s table" % table
        missing = [c for c in TABLE_COLUMNS[kind] if c not in columns[table]]
        if missing:
            return "table %s has no column %s" % (table, ", ".join(missing))
    for prefix in prefixes:
        mapping = dict(conn.execute("SELECT label_property, column_name FROM %sClasses" % prefix))
        if SELF not in mapping:
            return "%sClasses has no row %r" % (prefix, SELF)
        unmapped = [label for label, column in mapping.items()
                    if label != SELF and column not in columns[prefix + "Objects"]]
        if unmapped:
            return "%sClasses maps %s to columns %sObjects does not have" % (
                prefix, ", ".join(unmapped[:3]), prefix)
    return None


def pyworkflow_layout_problem():
    """None when the running pyworkflow writes set files as this module expects, otherwise
    what differs.  Checked once per process (see :func:`assume_pyworkflow_layout`), on a set
    of one item (an Integer and a String attribute) and a class table written by pyworkflow
    in a temporary folder."""
    if not _VERDICT:
        _VERDICT.append(_probe_pyworkflow())
    return _VERDICT[0]


def assume_pyworkflow_layout(problem):
    """Take ``problem``, the :func:`pyworkflow_layout_problem` of a parent process, as this
    process's (worker processes then need not import pyworkflow to check it again)."""
    _VERDICT[:] = [problem]


def recheck_pyworkflow_layout():
    """Forget the verdict: the next use checks again (tests that change the layout)."""
    _VERDICT.clear()


def _probe_pyworkflow():
    import pyworkflow
    from pyworkflow.object import Integer, Object, Set, String
    with tempfile.TemporaryDirectory(prefix="scipion-set-probe-") as folder:
        path = str(Path(folder) / "probe.sqlite")
        for prefix in ("", CLASS_PREFIX[:-1] % 1):
            items = Set(filename=path, prefix=prefix)
            item = Object(objId=7)
            item._index, item._filename = Integer(3), String("stack.mrcs")
            items.append(item)
            items.write()
            items.close()
        with _connect(path) as conn:
            problem = _layout_problem(conn) or _probe_problem(conn)
    if problem:
        return "pyworkflow %s writes set files unlike this plugin expects: %s" % (
            pyworkflow.__version__, problem)
    return None


def _probe_problem(conn):
    """What differs in the probe file beyond the tables and columns, or None."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version != SCHEMA_VERSION:
        return "schema version %s, not %d" % (version, SCHEMA_VERSION)
    for prefix in ("", CLASS_PREFIX % 1):
        if prefix + "Objects" not in {n for (n,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}:
            return "the items of class 1 are not in table %sObjects" % prefix
        mapping = {label: (column, kind) for label, column, kind in conn.execute(
            "SELECT label_property, column_name, class_name FROM %sClasses" % prefix)}
        types = {name: kind for _, name, kind, *_ in conn.execute(
            "PRAGMA table_info(%sObjects)" % prefix)}
        for label, kind in (("_index", "Integer"), ("_filename", "String")):
            column, found = mapping.get(label, (None, None))
            if found != kind or types.get(column) != SQL_TYPES.get(kind, "TEXT"):
                return "%s (%s) is stored as %s %s" % (label, kind, found, types.get(column))
        row = conn.execute('SELECT id, enabled, "%s", "%s" FROM %sObjects' % (
            mapping["_index"][0], mapping["_filename"][0], prefix)).fetchall()
        if row != [(7, 1, 3, "stack.mrcs")]:
            return "the item was stored as %s" % row
    return None


def layout_problem(*paths):
    """None when the SQL of this module applies to the set files ``paths`` (and to what the
    running pyworkflow writes), otherwise what differs.  Files that do not exist pass (the
    function that needs them says so)."""
    problem = pyworkflow_layout_problem()
    for path in paths if problem is None else ():
        problem = _file_problem(path)
        if problem:
            return "%s: %s" % (path, problem)
    return problem


def _file_problem(path):
    """:func:`_layout_problem` of a file, checked again only once the file has changed (the
    row copies of one analysis read the same set files hundreds of times)."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    key = (os.path.realpath(path), stat.st_mtime_ns, stat.st_size)
    if key not in _CHECKED:
        with _connect(path) as conn:
            _CHECKED[key] = _layout_problem(conn)
    return _CHECKED[key]


def _sql_or_api(*file_arguments):
    """Run the decorated function when :func:`layout_problem` finds nothing wrong with the
    files its arguments ``file_arguments`` name; otherwise run its namesake in
    :mod:`.set_api` (same arguments, same result) and log why, once per reason."""
    def decorate(function):
        signature = inspect.signature(function)

        @functools.wraps(function)
        def run(*args, **kwargs):
            named = signature.bind(*args, **kwargs).arguments
            problem = layout_problem(*(named[a] for a in file_arguments if a in named))
            if problem is None:
                return function(*args, **kwargs)
            if problem not in _LOGGED:
                _LOGGED.add(problem)
                logger.warning("%s; Scipion sets are read and written through Scipion's API "
                               "instead of SQL (slower)", problem)
            from . import set_api
            return getattr(set_api, function.__name__)(*args, **kwargs)
        return run
    return decorate


# ----------------------------------------------------------------------------- readers

@_sql_or_api("path")
def read_set_properties(path):
    """The set's ``Properties`` table as a dict of strings."""
    with _connect(path) as conn:
        return dict(conn.execute("SELECT key, value FROM Properties").fetchall())


def column_values(values, kind):
    """One column of stored values as a numpy array: float64 for ``Float`` attributes (NULL
    as NaN), int64 for ``Integer`` ones (float64 when some are NULL), otherwise the types
    pandas infers (text and NULL as objects; equal ``String`` values share one object, which
    saves hundreds of MB for the stack names of a million particles)."""
    try:
        if kind == "Float":
            return np.array(values, dtype=np.float64)
        if kind == "Integer":
            try:
                return np.array(values, dtype=np.int64)
            except TypeError:  # NULL values
                return np.array(values, dtype=np.float64)
    except (TypeError, ValueError):  # values not of the declared type
        pass
    if kind == "String":  # stack and micrograph names: one object per distinct text
        distinct = {}
        values = [distinct.setdefault(v, v) for v in values]
    return pd.Series(values, dtype=object).infer_objects().to_numpy()


def chosen_attributes(kinds, attributes, skip_missing, path):
    """The attribute labels to read of items whose attributes are ``kinds`` ({label: class
    name}, in table order): all of them, or those of ``attributes`` (the ones the items lack
    dropped with ``skip_missing``, an error otherwise)."""
    if attributes is None:
        return [a for a in kinds if a != SELF]
    missing = [a for a in attributes if a not in kinds]
    if missing and not skip_missing:
        raise SetTableError("%s: set items have no attribute(s) %s" % (path, ", ".join(missing)))
    return [a for a in attributes if a in kinds]


def item_columns(ids, enabled, enabled_only, labels, columns):
    """{label: array}: ``id``, ``enabled`` (all ones when only enabled items were read), then
    the attribute columns."""
    if enabled_only:
        enabled = np.ones(len(ids), dtype=np.int64)
    return {"id": ids, "enabled": enabled, **dict(zip(labels, columns))}


def _read_columns(conn, prefix, attributes, enabled_only, path, skip_missing=False):
    """{label: numpy array} of a table's items (``id``, ``enabled``, then ``attributes``)."""
    mapping = {label: (column, kind) for label, column, kind in conn.execute(
        "SELECT label_property, column_name, class_name FROM %sClasses" % prefix)}
    labels = chosen_attributes({a: kind for a, (_, kind) in mapping.items()}, attributes,
                               skip_missing, path)
    # Only enabled items: their ``enabled`` is not read (all 1).
    head = ["id"] if enabled_only else ["id", "enabled"]
    kinds = ["Integer"] * len(head) + [mapping[a][1] for a in labels]
    query = "SELECT %s FROM %sObjects %s ORDER BY id" % (
        ", ".join(head + ['"%s"' % mapping[a][0] for a in labels]), prefix,
        "WHERE enabled = 1" if enabled_only else "")
    with _gc_paused():
        try:
            columns = _fetch_typed(conn, query, kinds)
        except (TypeError, ValueError, OverflowError):  # NULL integers, text in numbers...
            columns = _fetch_rows(conn, query, kinds)
    return item_columns(columns[0], None if enabled_only else columns[1], enabled_only, labels,
                        columns[len(head):])


def _fetch_typed(conn, query, kinds):
    """The query's columns, read row by row straight into one numpy record array (no list
    of row tuples), typed as :func:`column_values` types them.  Integers pass through float64
    (NULL as NaN), exact below 2**53; a larger one raises OverflowError."""
    dtype = [("f%d" % i, "f8" if kind in ("Float", "Integer") else "O")
             for i, kind in enumerate(kinds)]
    records = np.fromiter(conn.execute(query), dtype=dtype)
    columns = []
    for (field, code), kind in zip(dtype, kinds):
        values = np.ascontiguousarray(records[field])
        if kind == "Integer" and not np.isnan(values).any():
            if np.abs(values).max(initial=0) >= 2 ** 53:
                raise OverflowError("integer too large for float64")
            values = values.astype(np.int64)
        columns.append(values if code != "O" else column_values(values, kind))
    return columns


def _fetch_rows(conn, query, kinds):
    """The query's columns, from the fetched row tuples, as :func:`column_values` makes them."""
    rows = conn.execute(query).fetchall()
    values = zip(*rows) if rows else [()] * len(kinds)
    del rows  # each column's Python objects are freed as soon as it is converted
    return [column_values(column, kind) for column, kind in zip(values, kinds)]


@contextmanager
def _gc_paused():
    """No garbage collection while millions of row tuples are alive: they hold no cycles,
    and collections triggered by their creation would walk them again and again (about
    half the reading time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@_sql_or_api("path")
def read_set_items(path, attributes=None, enabled_only=True, skip_missing=False):
    """Items of a set file as a DataFrame: ``id``, ``enabled`` and one column per attribute.

    ``attributes`` limits the columns (labels like ``'_filename'``); None reads them all.
    With ``skip_missing``, attributes the items lack are left out instead of raising.
    Numbers are float64 (``Float`` attributes, NULL as NaN) or int64 (``Integer`` ones
    without NULL); text and other values are objects.
    """
    with _connect(path) as conn:
        return pd.DataFrame(_read_columns(conn, "", attributes, enabled_only, path,
                                          skip_missing))


@_sql_or_api("path")
def read_class_items(path, attributes=None, enabled_only=True, skip_missing=False):
    """All items of a SetOfClasses file with a ``classId`` column (one query per class).

    Classes that are disabled are skipped; classes with no items give no rows (use
    :func:`read_set_items` on the same file to list every class).  With ``skip_missing``,
    attributes the items lack are left out instead of raising.  Column types as
    :func:`read_set_items`.
    """
    parts = list(_class_columns(path, attributes, enabled_only, skip_missing))
    return pd.DataFrame({label: concatenated([part[label] for part in parts])
                         for label in parts[0]})


@_sql_or_api("path")
def iter_class_items(path, attributes=None, enabled_only=True, skip_missing=False):
    """The items of :func:`read_class_items`, one DataFrame per class (to convert a large
    set a class at a time)."""
    for columns in _class_columns(path, attributes, enabled_only, skip_missing):
        yield pd.DataFrame(columns)


def _class_columns(path, attributes, enabled_only, skip_missing):
    """{label: array} of the items of each enabled class (by class id), ``classId`` first."""
    with _connect(path) as conn:
        prefixes = {int(m.group(1)[len("Class"):-1]): m.group(1) for m in (
            _CLASS_TABLE.match(name) for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")) if m}
        enabled = set(_read_columns(conn, "", [], enabled_only, path)["id"].tolist())
        found = False
        for class_id in sorted(enabled.intersection(prefixes)):
            columns = _read_columns(conn, prefixes[class_id], attributes, enabled_only, path,
                                    skip_missing)
            found = True
            yield {"classId": np.full(len(columns["id"]), class_id), **columns}
    if not found:
        raise SetTableError("%s: the set of classes holds no particles" % path)


def concatenated(arrays):
    """Columns of several tables as one (object when their types differ, as pandas would)."""
    kinds = {a.dtype.kind for a in arrays}
    if len(kinds) > 1 and not kinds <= {"i", "f"}:
        arrays = [a.astype(object) for a in arrays]
    return np.concatenate(arrays)


def matrix_lines(ids, texts):
    """(ids as int64, the ``[[a, b, c, d], ...]`` texts as one text, a line each, no brackets)."""
    ids = np.array(ids.split(","), dtype=np.int64) if ids else np.empty(0, dtype=np.int64)
    return ids, (texts or "").translate(_NO_BRACKETS)


@_sql_or_api("path")
def read_class_matrix_lines(path, class_id, label="_transform._matrix", enabled_only=True):
    """The matrix texts of a class's items as one text, by SQLite: (item ids, text), the
    ``[[a, b, c, d], ...]`` of each item (id order) as a line of 16 comma-separated numbers
    (see :func:`.particles.parse_matrix_lines`); None when the items have no ``label``.

    No Python string is made per item: a million matrices are ~300 MB of text.
    """
    prefix = CLASS_PREFIX % int(class_id)
    with _connect(path) as conn:
        row = conn.execute("SELECT column_name FROM %sClasses WHERE label_property = ?" % prefix,
                           (label,)).fetchone()
        if row is None:
            return None
        where = "WHERE enabled = 1" if enabled_only else ""
        # Both aggregates run over one ordered scan, so the ids and lines correspond.
        ids, lines = conn.execute(
            "SELECT group_concat(id), group_concat(m, char(10)) "
            "FROM (SELECT id, \"%s\" AS m FROM %sObjects %s ORDER BY id)"
            % (row[0], prefix, where)).fetchone()
    return matrix_lines(ids, lines)


# ----------------------------------------------------------------------------- writers
# A subset of a million particles made through the Scipion API builds a million Python
# objects; one ``INSERT ... SELECT`` takes seconds.  The caller then wraps the file in a Scipion
# set object, copies the set-level information (sampling rate, acquisition...) and registers
# it.  Classes are added the same way: the caller appends a few through the Scipion API, the
# others are copies of their rows (copy_class_rows), then fill_classes copies their items.

def _table_sql(conn, name):
    row = conn.execute("SELECT sql FROM src.sqlite_master WHERE type='table' AND name=?",
                       (name,)).fetchone()
    if row is None:
        raise SetTableError("table %s missing" % name)
    return row[0]


@_sql_or_api()
def create_set_file(path):
    """Create an empty SQLite file with :data:`PAGE_SIZE` pages, for a set the caller then
    writes through Scipion and fills here (:func:`fill_classes`)."""
    with closing(sqlite3.connect(str(path))) as conn:
        conn.execute("PRAGMA page_size = %d" % PAGE_SIZE)
        conn.execute("VACUUM")  # writes the header, and with it the page size


def _new_file_pragmas(conn):
    """No rollback journal, no fsync: for files the caller writes from scratch (a failed
    step removes or rewrites them).  A new file gets :data:`PAGE_SIZE` pages (ignored for
    a file that already holds tables) and pyworkflow's schema version."""
    conn.execute("PRAGMA main.page_size = %d" % PAGE_SIZE)
    conn.execute("PRAGMA main.journal_mode = OFF")
    conn.execute("PRAGMA main.synchronous = OFF")
    conn.execute("PRAGMA main.user_version = %d" % SCHEMA_VERSION)


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
                class_id=None, create=True, added=None):
    """Create <target_prefix>Classes/Objects like the source's (unless ``create`` is False:
    they exist) and copy the member items (``schemas`` caches what is read of the source
    tables between calls).  With ``class_id``, the copies' ``_classId`` (when they have one)
    is set to it; ``added``: columns of ``temp.added`` appended to every copy (NULL for
    the items it lacks)."""
    schemas = {} if schemas is None else schemas
    if create:
        _create_item_tables(conn, source_prefix, target_prefix, schemas)
    else:
        _check_same_columns(conn, source_prefix, target_prefix, added or ())
    values, joined = "o.*", ""
    if class_id is not None:
        class_column = _class_id_column(conn, source_prefix, schemas)
        values = ", ".join(str(int(class_id)) if column == class_column else 'o."%s"' % column
                           for column in _columns(conn, source_prefix, schemas))
    if added:
        values += "".join(', a."%s"' % column for column in added)
        joined = " LEFT JOIN temp.added AS a ON a.id = m.id"
    # Members in id order, each item looked up by id (CROSS JOIN keeps that loop order):
    # a third faster than ``id IN (SELECT ...)``, and no sort.
    return conn.execute(
        "INSERT INTO main.%sObjects SELECT %s FROM temp.members AS m CROSS JOIN "
        "src.%sObjects AS o ON o.id = m.id%s WHERE m.class = ? AND o.enabled = 1 "
        "ORDER BY m.id" % (target_prefix, values, source_prefix, joined),
        (member_class,)).rowcount


def _create_item_tables(conn, source_prefix, target_prefix, schemas):
    """Create <target_prefix>Classes/Objects like the source's, the attributes described."""
    for table in ("Classes", "Objects"):
        key = source_prefix + table
        if key not in schemas:
            schemas[key] = _table_sql(conn, key)
        conn.execute(schemas[key].replace("CREATE TABLE %s" % key,
                                          "CREATE TABLE main.%s%s" % (target_prefix, table), 1))
    # Names are qualified: the attached source may hold tables of the same name.
    conn.execute("INSERT INTO main.%sClasses SELECT * FROM src.%sClasses"
                 % (target_prefix, source_prefix))


def _check_same_columns(conn, source_prefix, target_prefix, added=()):
    """Items of one more source table go to a target table: their columns must mean the
    same attributes (but the ``added`` columns of the target)."""
    query = "SELECT column_name, label_property, class_name FROM %s.%sClasses ORDER BY column_name"
    source = conn.execute(query % ("src", source_prefix)).fetchall()
    target = [row for row in conn.execute(query % ("main", target_prefix)).fetchall()
              if row[0] not in added]
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


def _attach_source(conn, path):
    conn.execute("ATTACH DATABASE ? AS src", ("file:%s?mode=ro" % Path(path).resolve(),))


@_sql_or_api("source_file")
def write_item_subset(source_file, target_file, ids, source_prefix="", attributes=None):
    """Write the items of ``source_file`` whose ids are in ``ids`` as a new set file.

    ``source_prefix`` selects a class's items in a SetOfClasses file (``'Class003_'``).
    ``ids`` may instead map several prefixes to the ids taken from each (``source_prefix``
    unused): items of several classes of one SetOfClasses file into one set.
    ``attributes``: (ids, {name: (class name, values)}) added to the items as
    :func:`add_item_attributes` adds them, but while they are copied (a million items
    updated afterwards are written twice).
    Returns the number of items written.  The target must not exist.
    """
    target_file = Path(target_file)
    if target_file.exists():
        raise FileExistsError("%s already exists" % target_file)
    parts = subset_parts(target_file, ids, source_prefix)
    with closing(sqlite3.connect(str(target_file))) as conn:
        _new_file_pragmas(conn)
        _attach_source(conn, source_file)
        conn.execute(_table_sql(conn, "Properties").replace("CREATE TABLE Properties",
                                                            "CREATE TABLE main.Properties", 1))
        _create_members(conn)
        count, schemas, added = 0, {}, None
        for number, (prefix, part) in enumerate(parts):
            _add_members(conn, number, part)
            if number == 0:
                _create_item_tables(conn, prefix, "", schemas)
                if attributes is not None:
                    added = _attribute_values(conn, *attributes, set_file=target_file)
            count += _copy_items(conn, prefix, "", member_class=number, schemas=schemas,
                                 create=False, added=added)
        conn.commit()
    return count


def _attribute_values(conn, ids, attributes, set_file):
    """Add the columns of ``attributes`` (see :func:`add_item_attributes`) to the empty
    ``main.Objects`` and their values, by item id, to ``temp.added``; returns the columns."""
    ids = np.asarray(ids, dtype=np.int64).ravel().tolist()
    columns = _add_attribute_columns(conn, ids, attributes, set_file)
    conn.execute("DROP TABLE IF EXISTS temp.added")
    conn.execute("CREATE TEMP TABLE added (id INTEGER PRIMARY KEY, %s)"
                 % ", ".join('"%s"' % c for c in columns))
    conn.executemany("INSERT INTO temp.added VALUES (?%s)" % (", ?" * len(columns)),
                     zip(ids, *(values for _, values in attributes.values())))
    return columns


def subset_parts(target_file, ids, source_prefix):
    """[(source prefix, ids)] of :func:`write_item_subset`'s arguments."""
    parts = list(ids.items()) if isinstance(ids, dict) else [(source_prefix, ids)]
    if not parts:
        raise ValueError("%s: no class to copy items from" % target_file)
    return parts


@_sql_or_api("classes_file")
def copy_class_rows(classes_file, copies):
    """Add classes to a SetOfClasses file as copies of classes it holds.

    ``copies`` maps a new class id to the id of the class whose row (representative,
    acquisition, every column but the id and the size) it copies; the new classes are empty.
    The set's ``_size`` property is updated; items are added with :func:`fill_classes`.
    Returns the number of classes.
    """
    with closing(sqlite3.connect(str(classes_file))) as conn:
        size = conn.execute("SELECT column_name FROM Classes WHERE label_property = '_size'"
                            ).fetchone()
        columns = ", ".join('"%s"' % row[1] for row in conn.execute("PRAGMA table_info(Objects)")
                            if row[1] != "id")
        values = columns if size is None else columns.replace('"%s"' % size[0], "0")
        conn.executemany("INSERT INTO Objects (id, %s) SELECT ?, %s FROM Objects WHERE id = ?"
                         % (columns, values),
                         [(int(new), int(old)) for new, old in copies.items()])
        count = conn.execute("SELECT COUNT(*) FROM Objects").fetchone()[0]
        conn.execute("UPDATE Properties SET value = ? WHERE key = '_size'", (str(count),))
        conn.commit()
    return count


@_sql_or_api("classes_file", "items_file")
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
    parts = class_parts(class_members)
    with closing(sqlite3.connect(str(classes_file))) as conn:
        _new_file_pragmas(conn)
        _attach_source(conn, items_file)
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
            prefix = CLASS_PREFIX % int(class_id)
            for table in ("Classes", "Objects"):
                conn.execute("DROP TABLE IF EXISTS main.%s%s" % (prefix, table))
            count = 0
            for k, (items_prefix, _) in enumerate(members):
                count += _copy_items(conn, items_prefix, prefix, numbers[(class_id, k)], schemas,
                                     class_id=int(class_id), create=k == 0)
            conn.execute('UPDATE main.Objects SET "%s" = ? WHERE id = ?' % size_column[0],
                         (count, int(class_id)))
        conn.commit()


def class_parts(class_members):
    """{class id: [(items prefix, ids), ...]} of :func:`fill_classes`'s ``class_members``."""
    return {class_id: members if isinstance(members, list) else [members]
            for class_id, members in class_members.items()}


def check_new_attributes(set_file, ids, attributes, existing):
    """Raise when an attribute of ``attributes`` is in ``existing`` or has not one value per
    id (see :func:`add_item_attributes`)."""
    for name, (_, values) in attributes.items():
        if name in existing:
            raise SetTableError("%s: items already have an attribute %s" % (set_file, name))
        if len(values) != len(ids):
            raise ValueError("%s: %d values for %d items" % (name, len(values), len(ids)))


@_sql_or_api("set_file")
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
        columns = _add_attribute_columns(conn, ids, attributes, set_file)
        for column, (_, values) in zip(columns, attributes.values()):
            conn.executemany('UPDATE Objects SET "%s" = ? WHERE id = ?' % column,
                             zip(values, ids))
        conn.commit()


def _add_attribute_columns(conn, ids, attributes, set_file):
    """Describe each attribute in ``main.Classes`` and add its column to ``main.Objects``
    (values NULL); returns the column names, in the order of ``attributes``."""
    used = {row[0] for row in conn.execute("SELECT column_name FROM main.Classes")}
    taken = {row[0] for row in conn.execute("SELECT label_property FROM main.Classes")}
    check_new_attributes(set_file, ids, attributes, taken)
    columns, number = [], 1
    for name, (class_name, _) in attributes.items():
        while "c%02d" % number in used:
            number += 1
        column = "c%02d" % number
        used.add(column)
        columns.append(column)
        conn.execute("INSERT INTO main.Classes (label_property, column_name, class_name) "
                     "VALUES (?, ?, ?)", (name, column, class_name))
        conn.execute('ALTER TABLE main.Objects ADD COLUMN "%s" %s DEFAULT NULL'
                     % (column, SQL_TYPES.get(class_name, "TEXT")))
    return columns
