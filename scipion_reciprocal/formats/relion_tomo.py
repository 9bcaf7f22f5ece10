"""RELION 5 tomography projects as RECOVAR's ``parse_relion5_tomo`` reads them.

A project holds ``tomograms.star`` (``data_global``: one row per tomogram with
``rlnTomoTiltSeriesStarFile``, ``rlnTomoHand``, ``rlnTomoTiltSeriesPixelSize``), one STAR per
tilt series (one row per tilt image: ``rlnTomoXTilt/YTilt/ZRot``, defocus,
``rlnMicrographPreExposure``, ``rlnCtfScalefactor``) and the particles' ``particles.star``
(``rlnTomoName``, ``rlnTomoParticleName``, ``rlnCenteredCoordinateX/Y/ZAngst``, orientation,
``rlnTomoVisibleFrames`` and ``rlnImageName``: the particle's 2D stack of tilt images, as
RELION 5's Extract writes with 2D output). Paths are relative to the RELION project folder,
which RECOVAR finds as the first of ``tomograms.star``'s folder and its five parents where
the first tilt-series STAR exists; :func:`project_root` does the same.
"""
from pathlib import Path

from .errors import FormatError
from .star import StarTable, read_star

__all__ = ['TOMOGRAM_COLUMNS', 'TILT_SERIES_COLUMNS', 'PARTICLE_COLUMNS', 'project_root',
           'relion5_errors']

TOMOGRAM_COLUMNS = ('rlnTomoName', 'rlnTomoTiltSeriesStarFile', 'rlnTomoHand',
                    'rlnTomoTiltSeriesPixelSize')
#: What RECOVAR needs of every tilt image; the dose and the tilt scale are what its cryo-ET
#: CTF takes (``rlnMicrographPreExposure``, ``rlnCtfScalefactor``).
TILT_SERIES_COLUMNS = ('rlnTomoXTilt', 'rlnTomoYTilt', 'rlnTomoZRot', 'rlnTomoXShiftAngst',
                       'rlnTomoYShiftAngst', 'rlnDefocusU', 'rlnDefocusV', 'rlnDefocusAngle',
                       'rlnMicrographName', 'rlnMicrographPreExposure', 'rlnCtfScalefactor',
                       'rlnTomoNominalStageTiltAngle')
PARTICLE_COLUMNS = ('rlnTomoName', 'rlnTomoParticleName', 'rlnImageName',
                    'rlnCenteredCoordinateXAngst', 'rlnCenteredCoordinateYAngst',
                    'rlnCenteredCoordinateZAngst', 'rlnAngleRot', 'rlnAngleTilt', 'rlnAnglePsi',
                    'rlnTomoVisibleFrames', 'rlnRandomSubset')
_PARENTS_SEARCHED = 5


def _first_loop(path):
    return next((b for b in read_star(path).blocks.values() if hasattr(b, 'columns')), None)


def _tomograms(tomograms_star):
    table = _first_loop(tomograms_star)
    if table is None or not len(table):
        raise FormatError(tomograms_star, 'no tomogram table')
    missing = [c for c in TOMOGRAM_COLUMNS if c not in table.columns]
    if missing:
        raise FormatError(tomograms_star, f'is not a RELION 5 tomograms.star (no '
                                          f'{", ".join(missing)})')
    return table


def project_root(tomograms_star):
    """The RELION project folder of a ``tomograms.star`` (see the module docstring).

    Raises
    ------
    FormatError
        If no folder holds the first tilt-series STAR the file names.
    """
    tomograms_star = Path(tomograms_star)
    first = str(_tomograms(tomograms_star)['rlnTomoTiltSeriesStarFile'].iloc[0])
    folder = tomograms_star.resolve().parent
    for candidate in [folder] + list(folder.parents)[:_PARENTS_SEARCHED]:
        if (candidate / first).is_file():
            return candidate
    raise FormatError(tomograms_star, f'tilt-series STAR {first} not found in its folder or '
                                      f'the {_PARENTS_SEARCHED} above it (the RELION project)')


def relion5_errors(tomograms_star, particles_star):
    """What keeps RECOVAR from using these RELION 5 files, as messages (empty: usable)."""
    errors = []
    for path, label in ((tomograms_star, 'Tomograms STAR'), (particles_star, 'Particles STAR')):
        if not path or not Path(path).is_file():
            errors.append(f'{label}: file {path!r} not found.')
    if errors:
        return errors
    try:
        root = project_root(tomograms_star)
        tomograms = _tomograms(tomograms_star)
        series = Path(root) / str(tomograms['rlnTomoTiltSeriesStarFile'].iloc[0])
        tilts = _first_loop(series)
        if tilts is None:
            raise FormatError(series, 'no tilt table')
        missing = [c for c in TILT_SERIES_COLUMNS if c not in tilts.columns]
        if missing:
            errors.append(f'Tilt-series STAR {series} lacks {", ".join(missing)}: RECOVAR needs '
                          f'the tilt geometry, defocus, dose (rlnMicrographPreExposure) and '
                          f'tilt scale (rlnCtfScalefactor) of every tilt image.')
        with StarTable.open(particles_star, 'particles') as table:
            missing = [c for c in PARTICLE_COLUMNS if c not in table.columns]
            has_optics = table.has_optics
        if missing:
            errors.append(f'Particles STAR {particles_star} lacks {", ".join(missing)}: '
                          f'RECOVAR needs RELION 5 particles extracted as 2D stacks, with their '
                          f'3D coordinates, orientations and visible frames.')
        if not has_optics:
            errors.append(f'Particles STAR {particles_star} has no data_optics table.')
    except (FormatError, OSError, ValueError) as exc:
        errors.append(str(exc))
    return errors
