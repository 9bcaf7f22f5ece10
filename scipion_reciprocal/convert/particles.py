"""Scipion SetOfParticles <-> RELION particle tables and STAR files.

Scipion -> RELION reads the set's SQLite in one query (:mod:`.set_sql`) and converts
columns with numpy, so exporting a large set never builds one Python object per particle.
RELION -> Scipion creates Scipion objects (that is what a Scipion set is) with the CTF,
projection alignment and acquisition of every row.
"""
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.geometry import relion_from_scipion_matrices, scipion_matrices_from_relion
from ..formats.cryodrgn import TILT_COLUMNS
from ..formats.relion import format_image_names, merge_optics
from ..formats.star import write_particles_star
from .set_sql import read_set_items


class ConversionError(ValueError):
    """Input that cannot be converted; the message names the object or file and the reason."""


_CTF_ATTRS = {"_ctfModel._defocusU": "rlnDefocusU", "_ctfModel._defocusV": "rlnDefocusV",
              "_ctfModel._defocusAngle": "rlnDefocusAngle",
              "_ctfModel._phaseShift": "rlnPhaseShift"}
_ACQ_ATTRS = {"_acquisition._voltage": "rlnVoltage",
              "_acquisition._sphericalAberration": "rlnSphericalAberration",
              "_acquisition._amplitudeContrast": "rlnAmplitudeContrast"}
#: RELION values kept as extra attributes on Scipion particles (``_rlnClassNumber``...).
_EXTRA_RELION_ATTRS = ("rlnClassNumber", "rlnMaxValueProbDistribution",
                       "rlnNrOfSignificantSamples", "rlnLogLikeliContribution",
                       "rlnImageOriginalName", "rlnRandomSubset") + TILT_COLUMNS[:-1]
#: Item attributes :func:`items_to_relion` reads (to read no others from a large set).
ITEM_ATTRIBUTES = (["_filename", "_index", "_coordinate._x", "_coordinate._y",
                    "_coordinate._micName", "_micId", "_transform._matrix"]
                   + list(_CTF_ATTRS) + list(_ACQ_ATTRS) + ["_" + c for c in _EXTRA_RELION_ATTRS])
#: Columns of :func:`relion_columns` holding the parts of ``rlnImageName``, when asked.
IMAGE_INDEX, IMAGE_PATH = "imageIndex", "imagePath"
_OPTICS_KEYS = ["rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast",
                "rlnImagePixelSize", "rlnImageSize"]


@dataclass(frozen=True)
class ImagesInfo:
    """What the RELION conversion takes from a set of images, as plain values: a worker
    process converts items with it, without Scipion objects (see :mod:`.class_star`)."""
    name: str
    pixel_size: float
    image_size: int
    voltage: float = None
    spherical_aberration: float = None
    amplitude_contrast: float = None

    @classmethod
    def of(cls, images):
        """The info of a SetOfParticles (or a SetOfClasses' images); an ImagesInfo as is."""
        if isinstance(images, cls):
            return images
        pixel_size = float(images.getSamplingRate() or 0)
        if pixel_size <= 0:
            raise ConversionError("%s has no sampling rate" % describe(images))
        acquisition = images.getAcquisition()
        return cls(describe(images), pixel_size, _image_size(images), acquisition.getVoltage(),
                   acquisition.getSphericalAberration(), acquisition.getAmplitudeContrast())


def describe(obj):
    """'<class> <label> (id N)' for error messages."""
    label = obj.getObjLabel() if hasattr(obj, "getObjLabel") else ""
    return "%s %s(id %s)" % (obj.getClassName(), ("'%s' " % label) if label else "",
                             obj.getObjId())


def missing_ctf_error(particles, name=None):
    """An error string when ``particles`` carries no CTF, else None (``name`` labels it)."""
    if not particles.hasCTF():
        return ("%s has no CTF information: estimate the CTF of its micrographs (e.g. with "
                "CTFFIND) and re-extract, or import particles with CTF values."
                % (name or describe(particles)))
    return None


def missing_3d_alignment_error(particles, name=None):
    """An error string when ``particles`` has no 3D projection alignment, else None."""
    if not particles.hasAlignmentProj():
        return ("%s has no 3D projection alignment (angles and shifts): run a 3D refinement "
                "first." % (name or describe(particles)))
    return None


def particles_table(particles, with_ctf=True, with_alignment=True, stack_paths=None):
    """RELION 3.1 (particles, optics) DataFrames for a Scipion SetOfParticles.

    Parameters
    ----------
    particles : pwem.objects.SetOfParticles
    with_ctf : bool
        Write CTF columns; a set without CTF raises :class:`ConversionError`.
    with_alignment : bool
        Write angles/origins when the set has a projection alignment.
    stack_paths : dict, optional
        Maps each stack path as stored in Scipion to the path to write (e.g. a link).

    Returns
    -------
    particles_df, optics_df : pandas.DataFrame
        ``particles_df`` also has a ``scipionId`` column (dropped when writing STAR).
    """
    if with_ctf and missing_ctf_error(particles):
        raise ConversionError(missing_ctf_error(particles))
    items = read_set_items(particles.getFileName(), ITEM_ATTRIBUTES, skip_missing=True)
    if items.empty:
        raise ConversionError("%s is empty" % describe(particles))
    return items_to_relion(items, particles, with_ctf=with_ctf,
                           with_alignment=with_alignment and particles.hasAlignmentProj(),
                           stack_paths=stack_paths)


def items_to_relion(items, info, with_ctf=True, with_alignment=True, stack_paths=None):
    """RELION (particles, optics) tables from Scipion item rows (see :mod:`.set_sql`).

    ``items`` holds one row per particle with Scipion attribute columns (``_filename``,
    ``_ctfModel._defocusU``, ``_transform._matrix``...); ``info`` gives the sampling rate,
    dimensions and acquisition: a SetOfParticles, the images of a SetOfClasses, or their
    :class:`ImagesInfo`.  Row order is kept.
    """
    return split_optics(relion_columns(items, info, with_ctf, with_alignment, stack_paths))


def relion_columns(items, info, with_ctf=True, with_alignment=True, stack_paths=None,
                   image_names=True, matrices=None):
    """The particle columns of :func:`items_to_relion`, with the optics values of every row
    (``rlnVoltage``... ``rlnImageSize``) not yet grouped (see :func:`split_optics`).

    With ``image_names`` false, ``rlnImageName`` is left as its parts, columns
    :data:`IMAGE_INDEX` and :data:`IMAGE_PATH` (see :class:`..formats.star.ImageNames`).
    ``matrices`` (n, 4, 4) are the items' transformation matrices, when the caller read them
    (else they are parsed from the ``_transform._matrix`` column, when present).
    """
    info = ImagesInfo.of(info)
    pixel_size = info.pixel_size
    out = pd.DataFrame({"scipionId": items["id"].to_numpy()})
    paths = items["_filename"].astype(str)
    if stack_paths:
        paths = paths.map(lambda p: stack_paths.get(p, p))
    indices = items["_index"].fillna(0).astype(int).to_numpy()
    indices = np.where(indices > 0, indices, 1)  # index 0: an image file, not a stack
    if image_names:
        out["rlnImageName"] = format_image_names(indices, paths.to_numpy())
    else:
        out[IMAGE_INDEX], out[IMAGE_PATH] = indices, paths.to_numpy()
    if "_coordinate._x" in items and items["_coordinate._x"].notna().all():
        out["rlnCoordinateX"] = items["_coordinate._x"].astype(float).to_numpy()
        out["rlnCoordinateY"] = items["_coordinate._y"].astype(float).to_numpy()
    if "_coordinate._micName" in items and items["_coordinate._micName"].notna().all():
        out["rlnMicrographName"] = items["_coordinate._micName"].astype(str).to_numpy()
    elif "_micId" in items and items["_micId"].notna().all():
        out["rlnMicrographName"] = items["_micId"].astype(int).map("mic%06d".__mod__).to_numpy()
    if with_ctf:
        for attr, column in _CTF_ATTRS.items():
            out[column] = (items[attr].astype(float).fillna(0.0).to_numpy() if attr in items
                           else 0.0)
    if with_alignment and matrices is None and "_transform._matrix" in items:
        matrices = parse_matrices(items["_transform._matrix"])
    if with_alignment and matrices is not None:
        angles, origins = relion_from_scipion_matrices(matrices)
        out["rlnAngleRot"], out["rlnAngleTilt"], out["rlnAnglePsi"] = angles.T
        out["rlnOriginXAngst"] = origins[:, 0] * pixel_size
        out["rlnOriginYAngst"] = origins[:, 1] * pixel_size
    for column in _EXTRA_RELION_ATTRS:
        if "_" + column in items:
            out[column] = items["_" + column].to_numpy()

    defaults = {"rlnVoltage": info.voltage, "rlnSphericalAberration": info.spherical_aberration,
                "rlnAmplitudeContrast": info.amplitude_contrast}
    for attr, column in _ACQ_ATTRS.items():
        values = (items[attr].astype(float) if attr in items
                  else pd.Series(np.nan, index=items.index))
        default = defaults[column] if defaults[column] is not None else np.nan
        out[column] = values.fillna(default).to_numpy()
    out["rlnImagePixelSize"] = pixel_size
    out["rlnImageSize"] = info.image_size
    return out


def split_optics(out):
    """(particles, optics): rows of equal optics values (``rlnVoltage``... ``rlnImageSize``)
    form one optics group, numbered from 1 in order of first appearance.  ``out`` is a
    DataFrame, or a dict of columns (the optics columns are moved out of it)."""
    keys = pd.DataFrame({key: out[key] for key in _OPTICS_KEYS})
    groups = keys.groupby(_OPTICS_KEYS, sort=False).ngroup().to_numpy() + 1
    keys["rlnOpticsGroup"] = groups
    optics = (keys.drop_duplicates("rlnOpticsGroup")[["rlnOpticsGroup"] + _OPTICS_KEYS]
              .sort_values("rlnOpticsGroup").reset_index(drop=True))
    optics.insert(0, "rlnOpticsGroupName", ["opticsGroup%d" % g for g in optics["rlnOpticsGroup"]])
    optics["rlnImageDimensionality"] = 2
    optics["rlnImageSize"] = optics["rlnImageSize"].astype(int)
    if isinstance(out, dict):
        for key in _OPTICS_KEYS:
            del out[key]
        out["rlnOpticsGroup"] = groups
        return out, optics
    out["rlnOpticsGroup"] = groups
    return out.drop(columns=_OPTICS_KEYS), optics


def parse_matrices(texts):
    """Parse many stored matrix texts (``[[a, b, c, d], ...]``): an (n, 4, 4) array."""
    texts = pd.Series(texts, dtype=object)
    if texts.isna().any():
        raise ConversionError("%d particles have no transformation matrix" % texts.isna().sum())
    lines = "\n".join(texts.tolist()).translate({ord("["): None, ord("]"): None})
    return parse_matrix_lines(lines, len(texts))


def parse_matrix_lines(lines, count):
    """Parse ``count`` matrices given as one text, a line of 16 comma-separated numbers
    each: an (n, 4, 4) array.  pandas' C reader parses them (a third faster than
    ``np.fromstring``, and it reports malformed lines), as bytes: ``io.StringIO`` would
    copy the text at four bytes a character, which makes the parse a third slower."""
    if count == 0:
        return np.empty((0, 4, 4))
    if lines.count(",") != 15 * count:
        raise ConversionError("transformation matrices are not all 4x4 lists of numbers")
    try:
        with warnings.catch_warnings():  # a line of too many values warns: make it an error
            warnings.simplefilter("error", pd.errors.ParserWarning)
            values = pd.read_csv(io.BytesIO(lines.encode()), header=None, names=range(16),
                                 index_col=False, dtype=np.float64, float_precision="high",
                                 skip_blank_lines=False).to_numpy()
    except (ValueError, pd.errors.ParserError, pd.errors.ParserWarning) as error:
        raise ConversionError("transformation matrices are not all 4x4 lists of numbers (%s)"
                              % str(error).splitlines()[0]) from error
    if len(values) != count or np.isnan(values).any():
        raise ConversionError("transformation matrices are not all 4x4 lists of numbers")
    return values.reshape(-1, 4, 4)


def _image_size(particles):
    dims = particles.getDim()  # stored with the set; getDimensions() opens the first image
    if not dims or not dims[0]:
        raise ConversionError("%s: image dimensions unknown (empty set?)" % describe(particles))
    return int(dims[0])


def link_stacks(particles_df, folder, project_dir):
    """Symlink every stack referenced by ``particles_df`` into ``folder`` as ``.mrcs``.

    Returns the mapping {path as stored -> link path relative to ``project_dir``} so that the
    STAR file written in ``project_dir`` is valid from there, like a RELION project.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mapping, used = {}, set()
    for stored in pd.unique(particles_df):
        source = Path(stored)
        if not source.is_absolute():
            source = Path.cwd() / source
        if not source.exists():
            raise ConversionError("particle stack %s does not exist" % source)
        name = source.stem
        while name in used:  # two stacks with one basename in different folders
            name += "_"
        used.add(name)
        link = folder / (name + ".mrcs")
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(source.resolve(), link)
        mapping[stored] = os.path.relpath(link, project_dir)
    return mapping


def export_particles_star(particles, star_path, link_folder=None, with_ctf=True):
    """Write ``particles`` as a RELION 3.1+ STAR file (data_optics + data_particles).

    With ``link_folder`` the stacks are symlinked there and image names are relative to the
    STAR file's folder (treated as the RELION project directory).  Returns the particle table.
    """
    star_path = Path(star_path)
    stack_paths = None
    if link_folder is not None:
        stored = read_set_items(particles.getFileName(), ["_filename"])["_filename"]
        stack_paths = link_stacks(stored, link_folder, star_path.parent)
    table, optics = particles_table(particles, with_ctf=with_ctf, stack_paths=stack_paths)
    write_particles_star(star_path, table.drop(columns=["scipionId"]), optics)
    return table


def star_rows_to_particles(particles_df, optics_df, out_set, pixel_size, project_dir,
                           id_column=None):
    """Append one Scipion Particle per STAR row to ``out_set`` (CTF, alignment, acquisition,
    and the particle's Coordinate: ``rlnCoordinateX/Y`` in micrograph pixels, rounded, with
    ``rlnMicrographName`` as its micrograph name and micrographs numbered from 1 in order of
    appearance as its micrograph id).

    ``project_dir`` is the folder image paths are relative to (the RELION project).  Rows of
    ``particles_df`` are RELION 3.1 columns; optics columns are merged in when given.
    ``id_column`` keeps that column as the Scipion object id (e.g. to keep ids of a subset).
    """
    import pwem.objects as emobj
    from pyworkflow.object import Float, Integer, String

    from ..formats.relion import parse_image_names

    table = merge_optics(particles_df, optics_df) if optics_df is not None else particles_df
    indices, paths = parse_image_names(table["rlnImageName"])
    paths = [p if os.path.isabs(p) else os.path.join(project_dir, p) for p in paths]
    has_ctf = {"rlnDefocusU", "rlnDefocusV"}.issubset(table.columns)
    has_angles = {"rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"}.issubset(table.columns)
    if has_angles:
        origins = _origins_px(table, pixel_size)
        matrices = scipion_matrices_from_relion(
            table[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy(float), origins)
    out_set.setSamplingRate(pixel_size)
    out_set.setHasCTF(has_ctf)
    if has_angles:
        out_set.setAlignmentProj()
    first = table.iloc[0]
    acquisition = emobj.Acquisition(
        voltage=float(first.get("rlnVoltage", 300.0)),
        sphericalAberration=float(first.get("rlnSphericalAberration", 2.7)),
        amplitudeContrast=float(first.get("rlnAmplitudeContrast", 0.1)), magnification=50000)
    out_set.setAcquisition(acquisition)
    if "rlnImageSize" in table:  # known from the optics table: no image file is opened
        size = int(table["rlnImageSize"].iloc[0])
        out_set.setDim((size, size, 1))
    columns = {c: table[c].to_numpy() for c in table.columns}
    extras = [c for c in _EXTRA_RELION_ATTRS if c in columns]
    # One particle and one of each sub-object, refilled for every row: appending copies the
    # values into the set's database, and building new objects per row costs most of the time.
    particle = emobj.Particle()
    particle.setAcquisition(acquisition)
    for column in extras:
        kind = columns[column].dtype.kind
        setattr(particle, "_" + column, Integer() if kind in "iu" else Float() if kind == "f"
                else String())
    if has_ctf:
        ctf = emobj.CTFModel()
        particle.setCTF(ctf)
        angle = columns.get("rlnDefocusAngle", np.zeros(len(table)))
        phase = columns.get("rlnPhaseShift", np.zeros(len(table)))
    if has_angles:
        transform = emobj.Transform()
        particle.setTransform(transform)
    has_coordinates = {"rlnCoordinateX", "rlnCoordinateY"} <= set(columns)
    if has_coordinates:
        coordinate = emobj.Coordinate()
        particle.setCoordinate(coordinate)
        xs = np.rint(columns["rlnCoordinateX"].astype(float)).astype(int)
        ys = np.rint(columns["rlnCoordinateY"].astype(float)).astype(int)
    has_micrographs = has_coordinates and "rlnMicrographName" in columns
    if has_micrographs:
        mic_codes, mic_names = pd.factorize(pd.Series(columns["rlnMicrographName"]).astype(str))
    has_class = "rlnClassNumber" in columns
    for row in range(len(table)):
        particle.cleanObjId()
        if id_column:
            particle.setObjId(int(columns[id_column][row]))
        particle.setLocation(int(indices[row]), paths[row])
        if has_ctf:
            ctf.setStandardDefocus(float(columns["rlnDefocusU"][row]),
                                   float(columns["rlnDefocusV"][row]), float(angle[row]))
            ctf.setPhaseShift(float(phase[row]))
        if has_angles:
            transform.setMatrix(matrices[row])
        if has_coordinates:
            coordinate.setPosition(int(xs[row]), int(ys[row]))
        if has_micrographs:
            coordinate.setMicName(mic_names[mic_codes[row]])
            coordinate.setMicId(int(mic_codes[row]) + 1)
            particle.setMicId(int(mic_codes[row]) + 1)
        for column in extras:
            getattr(particle, "_" + column).set(columns[column][row])
        if has_class:
            particle.setClassId(int(columns["rlnClassNumber"][row]))
        out_set.append(particle)
    return out_set


def _origins_px(table, pixel_size):
    if "rlnOriginXAngst" in table:
        return table[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy(float) / pixel_size
    if "rlnOriginX" in table:
        return table[["rlnOriginX", "rlnOriginY"]].to_numpy(float)
    return np.zeros((len(table), 2))
