"""Scipion SetOfClasses -> tables the core and plotting layers use (read from SQLite)."""
import os

import numpy as np
import pandas as pd

from .set_sql import read_class_items, read_set_items

#: Scipion item attribute -> role of core.reciprocal.classification_from_dataframe.
CLASSIFICATION_COLUMNS = {"class": "classId", "index": "_index", "stack": "_filename",
                          "original": "_rlnImageOriginalName",
                          "confidence": "_rlnMaxValueProbDistribution", "row_id": "id",
                          "micrograph": "_coordinate._micName", "x": "_coordinate._x",
                          "y": "_coordinate._y", "id": "id"}


def resolved_stack_paths(paths):
    """Stack paths with symbolic links resolved, one ``realpath`` per distinct path.

    The same images reach Scipion through different links (pwem's particle import links the
    RELION project into its run folder; the RELION-classification import keeps the original
    path), so location keys compare the files the paths point to.
    """
    paths = pd.Series(paths, copy=False)
    real = {path: os.path.realpath(path) for path in paths.dropna().unique()}
    return paths.map(real).fillna(paths)


def class_items(classes, attributes=None):
    """Every item of every enabled class, sorted by item id: all attributes, or those of
    ``attributes`` the items have."""
    return sorted_class_items(classes.getFileName(), attributes)


def sorted_class_items(classes_file, attributes=None):
    """:func:`class_items` of a SetOfClasses file."""
    items = read_class_items(classes_file, attributes, skip_missing=attributes is not None)
    return items.sort_values("id", kind="stable").reset_index(drop=True)


def class_item_count(classes):
    """Number of items of the enabled classes, as their ``_size`` records it."""
    sizes = read_set_items(classes.getFileName(), ["_size"], skip_missing=True)
    return int(sizes["_size"].fillna(0).sum()) if "_size" in sizes else 0


def class_ids(classes):
    """Ids of the enabled classes, empty ones included."""
    return read_set_items(classes.getFileName(), attributes=[])["id"].to_numpy()


def class_representatives(classes, project_dir="."):
    """One row per class: ``class``, ``path``, ``index``, ``exists``, ``distribution``,
    ``resolution`` (NaN), like :func:`core.relion_jobs.class_maps`, for any SetOfClasses."""
    table = read_set_items(classes.getFileName())
    sizes = table["_size"].fillna(0).astype(float) if "_size" in table else pd.Series(0.0, index=table.index)
    paths = table.get("_representative._filename", pd.Series([None] * len(table)))
    paths = [None if not isinstance(p, str) or not p else
             (p if os.path.isabs(p) else os.path.join(project_dir, p)) for p in paths]
    index = table.get("_representative._index", pd.Series(0, index=table.index)).fillna(0).astype(int)
    total = sizes.sum()
    return pd.DataFrame({
        "class": table["id"].astype(int).to_numpy(),
        "reference": [p or "" for p in paths],
        "path": paths,
        "index": index.to_numpy(),
        "exists": [bool(p) and os.path.exists(p) for p in paths],
        "distribution": (sizes / total).to_numpy() if total else np.zeros(len(table)),
        "resolution": np.nan,
    })
