"""A RELION STAR file as the verbatim source of the rows of a Scipion set.

A set of classes imported from a RELION job holds, item by item, the rows of the job's
``run_itNNN_data.star`` (item id ``k`` is row ``k - 1``).  When that still holds (same number
of rows, every item's image and class those of its row) the subset STAR files can copy the
job's own rows, byte for byte, instead of converting every particle back from Scipion: the
rows RELION wrote, with all their columns, and no per-particle conversion.
"""
import os

import numpy as np

from .classes import sorted_class_items
from ..core import particle_keys as pk
from ..formats.errors import FormatError
from ..formats.star import StarTable

#: Item attributes :func:`matching_star_table` compares with the STAR rows.
COMPARED_ATTRIBUTES = ("_index", "_filename")
_COMPARED_COLUMNS = {"rlnImageName": "text", "rlnClassNumber": "int"}


def matching_star_table(star_path, items, project_dir):
    """The STAR table of ``star_path`` when its rows are ``items``, in order.

    Parameters
    ----------
    star_path : path
        A RELION particles STAR file (``data_optics`` + ``data_particles``, or 3.0).
    items : pandas.DataFrame
        Items of a Scipion set sorted by id: ``id``, ``classId``, ``_index``, ``_filename``
        (as :func:`..convert.classes.class_items` reads them).
    project_dir : path
        The folder the STAR file's image names are relative to (the RELION project).

    Returns
    -------
    table, reason : StarTable or None, str or None
        The table (closed: it maps its file again when a subset is written) and None when
        item ``k`` is row ``k - 1`` with the same image and class, for every item and row;
        otherwise None and why not.
    """
    table, columns, reason = _compared_columns(star_path, len(items))
    if table is not None:
        reason = _difference(table, columns, items, project_dir)
    return (None, reason) if reason else (table, None)


def imported_items(star_path, project_dir, classes_file, attributes, count):
    """(items, table, None) when the set file ``classes_file`` still holds the rows of
    ``star_path`` (see :func:`matching_star_table`), else (items or None, None, why not):
    its items sorted by id with ``attributes`` and :data:`COMPARED_ATTRIBUTES` (None when
    the STAR file does not hold ``count`` rows: the set is not read), and the StarTable
    (closed, its rows found)."""
    table, columns, reason = _compared_columns(star_path, count)
    if table is None:
        return None, None, reason
    items = sorted_class_items(classes_file,
                               list(dict.fromkeys(list(attributes) + list(COMPARED_ATTRIBUTES))))
    reason = _difference(table, columns, items, project_dir)
    return items, None if reason else table, reason


def _compared_columns(star_path, count):
    """(StarTable, its columns compared with the items, None) when ``star_path`` holds
    ``count`` particle rows and those columns, else (None, None, why): the quick test,
    before a set's items are read (one pass finds the rows and the values).  The table is
    closed (its rows found; its file is mapped again when used)."""
    try:
        with StarTable.open(star_path) as table:
            missing = [c for c in _COMPARED_COLUMNS if c not in table.columns]
            if missing:
                return None, None, "%s has no %s" % (star_path, ", ".join(missing))
            columns = table.read_raw(list(_COMPARED_COLUMNS), kinds=_COMPARED_COLUMNS)
    except (OSError, FormatError) as error:
        return None, None, "%s cannot be read (%s)" % (star_path, error)
    if len(table) != count:
        return None, None, "%s has %d rows, the set %d items" % (star_path, len(table), count)
    return table, columns, None


def _difference(table, columns, items, project_dir):
    """Why the rows of ``table`` (their compared ``columns``) are not ``items`` in order, or
    None when they are."""
    ids = items["id"].to_numpy()
    if not np.array_equal(ids, np.arange(1, len(table) + 1)):
        return "%s has %d rows, the set %d items (ids %s)" % (
            table.path, len(table), len(ids), "1..N" if len(ids) else "none")
    if not np.array_equal(columns["rlnClassNumber"], items["classId"].to_numpy()):
        return "classes of %s differ from those of the set" % table.path
    if not _same_images(columns["rlnImageName"], items, project_dir):
        return "image names of %s differ from those of the set" % table.path
    return None


def _same_images(names, items, project_dir):
    """Whether ``index@stack`` names (stacks relative to ``project_dir``) are the items'."""
    try:
        rows = pk.location_keys(names)
    except ValueError:
        return False
    stored = pk.location_keys_from_parts(items["_index"].fillna(0).to_numpy(),
                                         items["_filename"].astype(str).to_numpy())
    if not np.array_equal(rows.index, stored.index):
        return False
    paths = np.array([pk.normalise_path(os.path.join(str(project_dir), label))
                      for label in rows.labels], dtype=object)
    return bool((paths[rows.codes] == stored.labels[stored.codes]).all())
