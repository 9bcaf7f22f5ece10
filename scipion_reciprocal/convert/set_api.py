"""The functions of :mod:`.set_sql` through Scipion's API, for set files whose layout is not
the one its SQL expects (another pyworkflow version): same arguments, same results.

Items are iterated as Scipion objects and each attribute is taken as Scipion stores it
(``getObjDict``), so the tables equal those read by SQL; sets are written with ``append``,
``update`` and ``write``.  One Python object per item: minutes for a million particles.
"""
import os
import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from .set_sql import (SELF, SetTableError, check_new_attributes, chosen_attributes,
                      class_parts, column_values, concatenated, item_columns, matrix_lines,
                      subset_parts)

_CLASS_PREFIX = re.compile(r"^Class(\d+)_$")


def _object_classes():
    """Scipion's object classes by name (pyworkflow's and every plugin's)."""
    import pyworkflow.object as pwobj
    from pyworkflow import Config
    classes = dict(pwobj.OBJECTS_DICT)
    classes.update(Config.getDomain().getObjects())
    return classes


@contextmanager
def _opened(path):
    """The set stored in ``path``, as the Scipion class it was written as (a plain Set when
    its class is unknown); closed on exit."""
    from pyworkflow.object import Set
    classes = _object_classes()
    probe = Set(filename=str(path), classesDict=classes)
    name = probe.getProperty(SELF)
    probe.close()
    kind = classes.get(name)
    items = kind(filename=str(path)) if isinstance(kind, type) and issubclass(kind, Set) \
        else Set(filename=str(path), classesDict=classes)
    try:
        yield items
    finally:
        items.close()


@contextmanager
def _items(path, prefix=""):
    """The items of a set file, or of class N of a SetOfClasses file when ``prefix`` is
    ``'ClassNNN_'``."""
    if not Path(path).exists():
        raise SetTableError("%s: Scipion set file not found" % path)
    with _opened(path) as items:
        if prefix:
            match = _CLASS_PREFIX.match(prefix)
            if match is None:
                raise SetTableError("%s: no items under the prefix %r" % (path, prefix))
            cls = items[int(match.group(1))]
            try:
                yield cls
            finally:
                cls.close()
        else:
            yield items


def _stored(value):
    """A value as SQLite hands it back (booleans are stored as integers)."""
    return int(value) if isinstance(value, bool) else value


def _columns(items, attributes, enabled_only, path, skip_missing):
    """{label: array} of a set's items (id order): ``id``, ``enabled``, then ``attributes``."""
    ids, enabled, rows, kinds = [], [], [], None
    for item in items.iterItems(orderBy="id"):
        if enabled_only and not item.isEnabled():
            continue
        stored = item.getObjDict(includeClass=True)
        if kinds is None:
            kinds = {label: kind[0] for label, kind in stored.items()}
            labels = chosen_attributes(kinds, attributes, skip_missing, path)
        ids.append(item.getObjId())
        enabled.append(int(item.isEnabled()))
        rows.append([_stored(stored[label][1]) for label in labels])
    if kinds is None:  # no items: the requested attributes, empty
        kinds, labels = {}, list(attributes or [])
    values = zip(*rows) if rows else [()] * len(labels)
    columns = [column_values(list(v), kinds.get(label)) for v, label in zip(values, labels)]
    return item_columns(np.array(ids, dtype=np.int64), np.array(enabled, dtype=np.int64),
                        enabled_only, labels, columns)


def read_set_properties(path):
    with _items(path) as items:
        mapper = items._getMapper()
        return {key: mapper.getProperty(key) for key in mapper.getPropertyKeys()}


def read_set_items(path, attributes=None, enabled_only=True, skip_missing=False):
    with _items(path) as items:
        return pd.DataFrame(_columns(items, attributes, enabled_only, path, skip_missing))


def _class_columns(path, attributes, enabled_only, skip_missing):
    with _items(path) as classes:
        found = False
        for cls in classes.iterItems(orderBy="id"):
            if (enabled_only and not cls.isEnabled()) or not cls.getSize():
                continue
            columns = _columns(cls, attributes, enabled_only, path, skip_missing)
            found = True
            yield {"classId": np.full(len(columns["id"]), cls.getObjId()), **columns}
    if not found:
        raise SetTableError("%s: the set of classes holds no particles" % path)


def read_class_items(path, attributes=None, enabled_only=True, skip_missing=False):
    parts = list(_class_columns(path, attributes, enabled_only, skip_missing))
    return pd.DataFrame({label: concatenated([part[label] for part in parts])
                         for label in parts[0]})


def iter_class_items(path, attributes=None, enabled_only=True, skip_missing=False):
    for columns in _class_columns(path, attributes, enabled_only, skip_missing):
        yield pd.DataFrame(columns)


def read_class_matrix_lines(path, class_id, label="_transform._matrix", enabled_only=True):
    ids, texts = [], []
    with _items(path, "Class%03d_" % int(class_id)) as items:
        for item in items.iterItems(orderBy="id"):
            stored = item.getObjDict()
            if label not in stored:
                return None
            if item.isEnabled() or not enabled_only:
                ids.append(str(item.getObjId()))
                if stored[label] is not None:  # as SQLite's group_concat, which skips NULL
                    texts.append(stored[label])
    return matrix_lines(",".join(ids), "\n".join(texts))


def create_set_file(path):
    """Nothing to prepare: Scipion creates the file when the set is written."""


def _append_members(target, source_file, parts, target_name, update=None):
    """Append to ``target`` the enabled items of each (prefix, ids) of ``parts`` (their
    ids kept), ``update`` called on each first; the parts' items must have the same
    attributes."""
    attributes = None
    for prefix, ids in parts:
        wanted = set(np.asarray(ids, dtype=np.int64).ravel().tolist())
        with _items(source_file, prefix) as items:
            for item in items.iterItems(orderBy="id"):
                if not item.isEnabled() or item.getObjId() not in wanted:
                    continue
                found = [(label, kind[0]) for label, kind
                         in item.getObjDict(includeClass=True).items()]
                if attributes is None:
                    attributes = found
                elif sorted(found) != sorted(attributes):
                    raise SetTableError("%sObjects: its items have other attributes than those "
                                        "copied before into %s" % (prefix, target_name))
                if update is not None:
                    update(item)
                target.append(item)


def write_item_subset(source_file, target_file, ids, source_prefix="", attributes=None):
    from pyworkflow.object import Set
    target_file = Path(target_file)
    if target_file.exists():
        raise FileExistsError("%s already exists" % target_file)
    parts = subset_parts(target_file, ids, source_prefix)
    target = Set(filename=str(target_file), classesDict=_object_classes())
    _append_members(target, source_file, parts, "Objects")
    target.write(properties=False)  # the caller writes the set's properties
    target.close()
    if attributes is not None:
        add_item_attributes(target_file, *attributes)
    return target.getSize()


def copy_class_rows(classes_file, copies):
    """Rewrites the set of classes with the copies added (appending a class to a stored
    SetOfClasses is not reliable through the API)."""
    with _items(classes_file) as classes, _rewrite(classes_file, classes) as target:
        kept = {}
        for cls in classes.iterItems(orderBy="id"):
            kept[cls.getObjId()] = cls.clone()
            copy = cls.clone()
            target.append(copy)
            for item in cls.iterItems(orderBy="id") if cls.getSize() else ():
                copy.append(item)
            copy.write(properties=False)
            target.update(copy)
            copy.close()
        for new, old in copies.items():
            copy = kept[int(old)].clone()  # the class's attributes, not its items
            copy.setObjId(int(new))
            target.append(copy)
            copy.close()
        target.write()
        return target.getSize()


def fill_classes(classes_file, items_file, class_members):
    with _items(classes_file) as classes:
        if not hasattr(classes, "getImages"):
            raise SetTableError("%s: not a SetOfClasses file (no _size column)" % classes_file)
        for class_id, members in class_parts(class_members).items():
            cls = classes[int(class_id)]
            _append_members(cls, items_file, members, "Class%03d_Objects" % int(class_id),
                            update=lambda item, c=int(class_id): _set_class(item, c))
            cls.write(properties=False)
            classes.update(cls)
            cls.close()
        classes.write()


@contextmanager
def _rewrite(path, original):
    """A new set of the class of the open set ``original`` (stored in ``path``), written in
    its place on exit with the original's properties (those the new set does not write)."""
    from pyworkflow.object import Set
    rewritten = Path("%s.api-rewrite" % path)
    if rewritten.exists():
        rewritten.unlink()
    target = Set(filename=str(rewritten), classesDict=_object_classes()) \
        if type(original) is Set else type(original)(filename=str(rewritten))
    try:
        yield target
    except BaseException:
        target.close()
        rewritten.unlink(missing_ok=True)
        raise
    source, written = original._getMapper(), target._getMapper()
    for key in source.getPropertyKeys():
        if not written.hasProperty(key):
            written.setProperty(key, source.getProperty(key))
    written.commit()
    target.close()
    original.close()
    os.replace(rewritten, path)


def _set_class(item, class_id):
    if hasattr(item, "setClassId"):
        item.setClassId(class_id)


def add_item_attributes(set_file, ids, attributes):
    """Rewrites the set with the attributes added (a column cannot be added through the API)."""
    ids = np.asarray(ids, dtype=np.int64).ravel().tolist()
    position = {item_id: i for i, item_id in enumerate(ids)}
    classes = _object_classes()
    check_new_attributes(set_file, ids, attributes, ())
    with _items(set_file) as items, _rewrite(set_file, items) as target:
        for number, item in enumerate(items.iterItems(orderBy="id")):
            if number == 0:  # the attributes below are set on the item object iterated
                check_new_attributes(set_file, ids, attributes, item.getObjDict())
            for name, (class_name, values) in attributes.items():
                value = classes[class_name]()
                if item.getObjId() in position:
                    value.set(values[position[item.getObjId()]])
                setattr(item, name, value)
            target.append(item)
