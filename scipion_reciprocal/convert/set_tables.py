"""Read Scipion sets straight from their SQLite files into pandas.

Iterating a Scipion set builds one Python object per item (minutes for a million
particles); these readers run one SQL query per table instead.  Layout of a set file:
``Classes`` maps attribute labels (``_ctfModel._defocusU``) to columns (``c05``),
``Objects`` holds the items, ``Properties`` the set attributes.  A SetOfClasses keeps its
classes in ``Objects`` and each class's items in ``ClassNNN_Objects`` (mapping in
``ClassNNN_Classes``).
"""
import re
import sqlite3
from contextlib import closing
from pathlib import Path

import pandas as pd

_CLASS_TABLE = re.compile(r"^Class(\d+)_Objects$")


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


def _read_items(conn, prefix, attributes, enabled_only, path, skip_missing=False):
    mapping = dict(conn.execute("SELECT label_property, column_name FROM %sClasses" % prefix))
    missing = [a for a in attributes or () if a not in mapping]
    if missing and skip_missing:
        attributes = [a for a in attributes if a in mapping]
    elif missing:
        raise SetTableError("%s: set items have no attribute(s) %s" % (path, ", ".join(missing)))
    labels = attributes if attributes is not None else [a for a in mapping if a != "self"]
    selected = ", ".join(["id", "enabled"] + ['"%s"' % mapping[a] for a in labels])
    query = "SELECT %s FROM %sObjects" % (selected, prefix)
    if enabled_only:
        query += " WHERE enabled = 1"
    table = pd.read_sql_query(query + " ORDER BY id", conn)
    table.columns = ["id", "enabled"] + list(labels)
    return table


def read_set_items(path, attributes=None, enabled_only=True, skip_missing=False):
    """Items of a set file as a DataFrame: ``id``, ``enabled`` and one column per attribute.

    ``attributes`` limits the columns (labels like ``'_filename'``); None reads them all.
    With ``skip_missing``, attributes the items lack are left out instead of raising.
    """
    with _connect(path) as conn:
        return _read_items(conn, "", attributes, enabled_only, path, skip_missing)


def read_class_items(path, attributes=None, enabled_only=True, skip_missing=False):
    """All items of a SetOfClasses file with a ``classId`` column (one query per class).

    Classes that are disabled are skipped; classes with no items give no rows (use
    :func:`read_set_items` on the same file to list every class).  With ``skip_missing``,
    attributes the items lack are left out instead of raising.
    """
    with _connect(path) as conn:
        tables = [name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
        enabled = set(_read_items(conn, "", [], enabled_only, path)["id"])
        frames = []
        for name in tables:
            match = _CLASS_TABLE.match(name)
            if not match or int(match.group(1)) not in enabled:
                continue
            items = _read_items(conn, "Class%s_" % match.group(1), attributes, enabled_only, path,
                                skip_missing)
            items.insert(0, "classId", int(match.group(1)))
            frames.append(items)
    if not frames:
        raise SetTableError("%s: the set of classes holds no particles" % path)
    return pd.concat(frames, ignore_index=True)
