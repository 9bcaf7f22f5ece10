"""Read Scipion sets straight from their SQLite files into pandas.

Iterating a Scipion set builds one Python object per item (minutes for a million
particles); these readers run one SQL query per table instead.  Layout of a set file:
``Classes`` maps attribute labels (``_ctfModel._defocusU``) to columns (``c05``),
``Objects`` holds the items, ``Properties`` the set attributes.  A SetOfClasses keeps its
classes in ``Objects`` and each class's items in ``ClassNNN_Objects`` (mapping in
``ClassNNN_Classes``).
"""
import gc
import re
import sqlite3
from contextlib import closing, contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

_CLASS_TABLE = re.compile(r"^Class(\d+)_Objects$")
_NO_BRACKETS = {ord("["): None, ord("]"): None}


class SetTableError(ValueError):
    """A Scipion set file that cannot be read as expected (the message names the file)."""


def _connect(path):
    path = Path(path)
    if not path.exists():
        raise SetTableError("%s: Scipion set file not found" % path)
    # Read-only URI: never create or lock-upgrade a set file of another protocol.
    return closing(sqlite3.connect("file:%s?mode=ro" % path.resolve(), uri=True))


def read_set_properties(path):
    """The set's ``Properties`` table as a dict of strings."""
    with _connect(path) as conn:
        return dict(conn.execute("SELECT key, value FROM Properties").fetchall())


def _column(values, kind):
    """One column of fetched values as a numpy array: float64 for ``Float`` attributes (NULL
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


def _read_columns(conn, prefix, attributes, enabled_only, path, skip_missing=False):
    """{label: numpy array} of a table's items (``id``, ``enabled``, then ``attributes``)."""
    mapping = {label: (column, kind) for label, column, kind in conn.execute(
        "SELECT label_property, column_name, class_name FROM %sClasses" % prefix)}
    missing = [a for a in attributes or () if a not in mapping]
    if missing and skip_missing:
        attributes = [a for a in attributes if a in mapping]
    elif missing:
        raise SetTableError("%s: set items have no attribute(s) %s" % (path, ", ".join(missing)))
    labels = attributes if attributes is not None else [a for a in mapping if a != "self"]
    # Only enabled items: their ``enabled`` is not read (all 1).
    head = ["id"] if enabled_only else ["id", "enabled"]
    fetched = head + list(labels)
    kinds = ["Integer"] * len(head) + [mapping[a][1] for a in labels]
    query = "SELECT %s FROM %sObjects %s ORDER BY id" % (
        ", ".join(head + ['"%s"' % mapping[a][0] for a in labels]), prefix,
        "WHERE enabled = 1" if enabled_only else "")
    with _gc_paused():
        try:
            columns = _fetch_typed(conn, query, kinds)
        except (TypeError, ValueError, OverflowError):  # NULL integers, text in numbers...
            columns = _fetch_rows(conn, query, kinds)
    columns = dict(zip(fetched, columns))
    if enabled_only:
        columns = {"id": columns["id"], "enabled": np.ones(len(columns["id"]), dtype=np.int64),
                   **{label: columns[label] for label in labels}}
    return columns


def _fetch_typed(conn, query, kinds):
    """The query's columns, read row by row straight into one numpy record array (no list
    of row tuples), typed as :func:`_column` types them.  Integers pass through float64
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
        columns.append(values if code != "O" else _column(values, kind))
    return columns


def _fetch_rows(conn, query, kinds):
    """The query's columns, from the fetched row tuples, as :func:`_column` makes them."""
    rows = conn.execute(query).fetchall()
    values = zip(*rows) if rows else [()] * len(kinds)
    del rows  # each column's Python objects are freed as soon as it is converted
    return [_column(column, kind) for column, kind in zip(values, kinds)]


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


def read_class_items(path, attributes=None, enabled_only=True, skip_missing=False):
    """All items of a SetOfClasses file with a ``classId`` column (one query per class).

    Classes that are disabled are skipped; classes with no items give no rows (use
    :func:`read_set_items` on the same file to list every class).  With ``skip_missing``,
    attributes the items lack are left out instead of raising.  Column types as
    :func:`read_set_items`.
    """
    parts = list(_class_columns(path, attributes, enabled_only, skip_missing))
    return pd.DataFrame({label: _concatenate([part[label] for part in parts])
                         for label in parts[0]})


def iter_class_items(path, attributes=None, enabled_only=True, skip_missing=False):
    """The items of :func:`read_class_items`, one DataFrame per class (to convert a large
    set a class at a time)."""
    for columns in _class_columns(path, attributes, enabled_only, skip_missing):
        yield pd.DataFrame(columns)


def _class_columns(path, attributes, enabled_only, skip_missing):
    """{label: array} of the items of each enabled class, ``classId`` first."""
    with _connect(path) as conn:
        tables = [name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
        enabled = set(_read_columns(conn, "", [], enabled_only, path)["id"].tolist())
        found = False
        for name in tables:
            match = _CLASS_TABLE.match(name)
            if not match or int(match.group(1)) not in enabled:
                continue
            columns = _read_columns(conn, "Class%s_" % match.group(1), attributes, enabled_only,
                                    path, skip_missing)
            found = True
            yield {"classId": np.full(len(columns["id"]), int(match.group(1))), **columns}
    if not found:
        raise SetTableError("%s: the set of classes holds no particles" % path)


def _concatenate(arrays):
    """Columns of several tables as one (object when their types differ, as pandas would)."""
    kinds = {a.dtype.kind for a in arrays}
    if len(kinds) > 1 and not kinds <= {"i", "f"}:
        arrays = [a.astype(object) for a in arrays]
    return np.concatenate(arrays)


def read_class_matrix_lines(path, class_id, label="_transform._matrix", enabled_only=True):
    """The matrix texts of a class's items as one text, by SQLite: (item ids, text), the
    ``[[a, b, c, d], ...]`` of each item (id order) as a line of 16 comma-separated numbers
    (see :func:`.particles.parse_matrix_lines`); None when the items have no ``label``.

    No Python string is made per item: a million matrices are ~300 MB of text.
    """
    prefix = "Class%03d_" % int(class_id)
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
    ids = np.array(ids.split(","), dtype=np.int64) if ids else np.empty(0, dtype=np.int64)
    return ids, (lines or "").translate(_NO_BRACKETS)
