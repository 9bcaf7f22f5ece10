"""RELION conventions: optics tables (RELION 3.0 per-particle optics -> 3.1 optics groups)
and image names (``index@stack``), on DataFrames and arrays; no file is read here."""
import numpy as np
import pandas as pd

#: Labels that RELION 3.1+ keeps in the optics table rather than per particle.
OPTICS_LABELS = (
    'rlnOpticsGroupName', 'rlnOpticsGroup', 'rlnMtfFileName', 'rlnMicrographOriginalPixelSize',
    'rlnVoltage', 'rlnSphericalAberration', 'rlnAmplitudeContrast', 'rlnImagePixelSize',
    'rlnImageSize', 'rlnImageDimensionality', 'rlnCtfDataAreCtfPremultiplied',
    'rlnBeamTiltX', 'rlnBeamTiltY', 'rlnOddZernike', 'rlnEvenZernike',
    'rlnMagMat00', 'rlnMagMat01', 'rlnMagMat10', 'rlnMagMat11', 'rlnMicrographPixelSize')
# What RELION 3.1+ needs in the optics table of particles.
REQUIRED_OPTICS = ('rlnOpticsGroup', 'rlnVoltage', 'rlnSphericalAberration',
                    'rlnAmplitudeContrast', 'rlnImagePixelSize', 'rlnImageSize')
#: RELION 3.0 per-particle pixel-size labels (3.1: rlnImagePixelSize in the optics table).
PIXEL_SIZE_LABELS = ('rlnMagnification', 'rlnDetectorPixelSize', 'rlnPixelSize')
# RELION 3.0 per-particle labels that 3.1 replaces (by the optics table, origins in Angstrom).
_LEGACY_LABELS = PIXEL_SIZE_LABELS + ('rlnOriginX', 'rlnOriginY', 'rlnOriginZ')


def check_optics(particles, optics):
    """The particles with a group number, and a copy of the optics with group names."""
    if 'rlnOpticsGroup' not in optics.columns:
        raise ValueError('the optics table has no rlnOpticsGroup column')
    optics = optics.copy()
    if 'rlnOpticsGroupName' not in optics.columns:
        optics.insert(0, 'rlnOpticsGroupName', 'opticsGroup' + optics['rlnOpticsGroup'].astype(str))
    if 'rlnOpticsGroup' not in particles:
        if len(optics) != 1:
            raise ValueError(f'particles have no rlnOpticsGroup column and there are '
                             f'{len(optics)} optics groups')
        particles = particles.assign(rlnOpticsGroup=int(optics['rlnOpticsGroup'].iloc[0]))
    unknown = set(np.unique(particles['rlnOpticsGroup'])) - set(optics['rlnOpticsGroup'])
    if unknown:
        raise ValueError(f'particles refer to optics groups {sorted(unknown)} absent from the '
                         f'optics table')
    return particles, optics


def upgrade_to_relion31(particles, image_size=None):
    """Split per-particle optics columns (RELION 3.0) into an optics table: (particles
    with ``rlnOpticsGroup`` and without optics columns, optics). One group per distinct
    optics values; the file's ``rlnOpticsGroup`` numbers (and names) are kept when they
    agree with them, else groups are numbered in order of first appearance. Pixel origins
    become ``rlnOrigin*Angst``. ValueError if a value is missing (``image_size``: box size).
    """
    p = particles.copy()
    missing = [c for c in ('rlnVoltage', 'rlnSphericalAberration', 'rlnAmplitudeContrast')
               if c not in p.columns]
    if missing:
        raise ValueError(f'cannot build the optics table: no column {", ".join(missing)}')
    if 'rlnImagePixelSize' not in p.columns:
        if 'rlnPixelSize' in p.columns:
            p['rlnImagePixelSize'] = p['rlnPixelSize'].astype(float)
        elif {'rlnDetectorPixelSize', 'rlnMagnification'} <= set(p.columns):
            p['rlnImagePixelSize'] = (p['rlnDetectorPixelSize'].astype(float) * 1e4
                                      / p['rlnMagnification'].astype(float))
        else:
            raise ValueError('cannot build the optics table: no pixel size (rlnImagePixelSize, '
                             'rlnPixelSize or rlnDetectorPixelSize + rlnMagnification)')
    if 'rlnImageSize' not in p.columns:
        if image_size is None:
            raise ValueError('cannot build the optics table: no rlnImageSize column; give the '
                             'box size (image_size)')
        p['rlnImageSize'] = int(image_size)
    if 'rlnImageDimensionality' not in p.columns:
        p['rlnImageDimensionality'] = 2
    for axis in 'XYZ':      # pixel origins (RELION 3.0) become origins in Angstrom
        old, new = f'rlnOrigin{axis}', f'rlnOrigin{axis}Angst'
        if old in p.columns and new not in p.columns:
            p[old] = p[old].astype(float) * p['rlnImagePixelSize']
            p = p.rename(columns={old: new})

    values = [c for c in OPTICS_LABELS if c in p.columns
              and c not in ('rlnOpticsGroup', 'rlnOpticsGroupName')]
    has_numbers = 'rlnOpticsGroup' in p.columns
    keys = values + ['rlnOpticsGroup'] if has_numbers else values
    groups = p.groupby(keys, sort=False, dropna=False).ngroup().to_numpy() + 1
    # ngroup numbers groups in order of first appearance, so these are in group order.
    rows = p.iloc[np.unique(groups, return_index=True)[1]]
    consistent = has_numbers and (
        pd.Series(groups).groupby(p['rlnOpticsGroup'].to_numpy()).nunique().max() == 1)
    numbers = rows['rlnOpticsGroup'].to_numpy() if consistent else np.arange(1, len(rows) + 1)
    names = rows['rlnOpticsGroupName'].to_numpy() if consistent and \
        'rlnOpticsGroupName' in p.columns else [f'opticsGroup{g}' for g in numbers]
    if not consistent:
        p['rlnOpticsGroup'] = groups
    optics = pd.DataFrame({'rlnOpticsGroupName': names, 'rlnOpticsGroup': numbers,
                           **{col: rows[col].to_numpy() for col in values}})
    ints = dict.fromkeys(('rlnOpticsGroup', 'rlnImageSize', 'rlnImageDimensionality'), np.int64)
    optics = optics.astype(ints).sort_values('rlnOpticsGroup', kind='stable', ignore_index=True)
    drop = [c for c in (*OPTICS_LABELS, *_LEGACY_LABELS)
            if c in p.columns and c != 'rlnOpticsGroup']
    return p.drop(columns=drop), optics


def merge_optics(particles, optics):
    """A copy of the particles (rows, order and index kept) with the columns of their optics
    group added (not replaced). ValueError if a particle's group is absent from ``optics``."""
    if optics is None:
        return particles.copy()
    particles, optics = check_optics(particles, optics)
    where = pd.Index(optics['rlnOpticsGroup']).get_indexer(particles['rlnOpticsGroup'])
    return particles.assign(**{col: optics[col].to_numpy()[where] for col in optics.columns
                               if col not in particles.columns})


def parse_image_names(series):
    """``'000012@Extract/job007/x.mrcs'`` -> (1-based indices, int64, 1 without ``@``; paths
    as written); ValueError if an index is not a positive integer."""
    text = pd.Series(np.asarray(series, dtype=object)).astype(str)
    parts = text.str.partition('@')
    has_at = (parts[1] == '@').to_numpy()
    paths = np.where(has_at, parts[2].to_numpy(), parts[0].to_numpy()).astype(object)
    indices = np.ones(len(text), dtype=np.int64)
    raw = parts[0][has_at]
    numbers = pd.to_numeric(raw.where(raw.str.fullmatch(r'\s*\d+\s*'), None), errors='coerce')
    bad = numbers.isna() | (numbers < 1)
    if bad.any():
        raise ValueError(f'image name {text[has_at][bad].iloc[0]!r} does not start with a '
                         f'positive image number before "@"')
    indices[has_at] = numbers.to_numpy(dtype=np.int64)
    return indices, paths


def format_image_names(indices, paths):
    """Image names ``'000012@path'`` (object array) from 1-based indices and one path per
    index, or one for all."""
    indices = np.asarray(indices)
    if indices.size and (indices.dtype.kind not in 'iuf' or np.any(np.mod(indices, 1) != 0)
                         or indices.min() < 1):
        raise ValueError('image indices must be positive integers')
    numbers = pd.Series(indices.astype(np.int64).ravel()).astype(str).str.zfill(6)
    paths = np.broadcast_to(np.asarray(paths, dtype=object), numbers.shape)
    return (numbers + '@' + pd.Series(paths, dtype=object).astype(str)).to_numpy(dtype=object)
