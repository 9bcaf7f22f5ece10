"""RECOVAR 1.0.5 ``postprocess`` in batch mode: its input folder and its results.

``recovar postprocess IN --batch --output OUT`` filters (and optionally sharpens) every pair of
half maps found as ``IN/volNNN/half1_unfil.mrc`` + ``half2_unfil.mrc`` and writes, per pair,
``OUT/volNNN_filtered.mrc`` and ``OUT/volNNN_filtered_info.txt`` (global resolution, B-factor),
or with ``--local`` ``OUT/volNNN_local_filtered.mrc``, ``..._local_resol.mrc``,
``..._local_auc.mrc`` and ``..._info.txt``; ``--estimate-B-factor`` adds
``..._bfactor_fsc_panels.png``. Batch mode because 1.0.5's single-map mode makes a job folder
at the ``--output`` path and then cannot write the map there. A pair that fails is only logged
(the command still completes): :func:`read_postprocess` reports it as missing.

B-factor units: 1.0.5 multiplies the Fourier coefficients by ``exp(B k^2 / 4)`` with ``k`` in
cycles per *pixel* (``locres._b_factor_scaling_for_spectrum`` builds its radial grid without
the voxel size), so ``--B-factor B`` acts as ``B x voxel^2`` A^2; and ``--estimate-B-factor``
fits the decay in A^2 but applies the value the same way (at 6 A/px a fit of 7408 A^2 became
``exp(7408 k^2 / 4)``: a map of NaN). :func:`recovar_bfactor` gives the value that acts as a
B-factor in A^2; estimates are read from a first run (:func:`read_postprocess`) and applied by
a second.
"""
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ._atomic import atomic_path
from .recovar_results import RecovarResultError, log_tail

__all__ = ['HALF1_NAME', 'HALF2_NAME', 'volume_name', 'write_batch_input', 'PostprocessedMap',
           'read_postprocess', 'recovar_bfactor', 'write_bfactors', 'read_bfactors']

HALF1_NAME, HALF2_NAME = 'half1_unfil.mrc', 'half2_unfil.mrc'
GLOBAL_SUFFIX, LOCAL_SUFFIX = '_filtered', '_local_filtered'
INFO_SUFFIX = '_info.txt'
LOCAL_RESOLUTION_SUFFIX = '_local_resol.mrc'
BFACTOR_PLOT_SUFFIX = '_bfactor_fsc_panels.png'

_RESOLUTION = re.compile(r'Global Resolution:\s*([-\d.eE+]+)')
_MEDIAN_LOCAL = re.compile(r'Median:\s*([-\d.eE+]+)')
_ESTIMATED_B = re.compile(r'Estimated B-factor:\s*([-\d.eE+]+)')
_APPLIED_B = re.compile(r'^B-factor:\s*([-\d.eE+]+)', re.MULTILINE)


def volume_name(index):
    """Name of the ``index``-th pair in the batch folder (RECOVAR looks for ``vol*``)."""
    return f'vol{index:03d}'


def write_batch_input(folder, pairs):
    """Link each ``(half1, half2)`` pair as ``folder/volNNN/half{1,2}_unfil.mrc``.

    Returns the volume names in order.
    """
    folder = Path(folder)
    names = []
    for index, (half1, half2) in enumerate(pairs):
        name = volume_name(index)
        (folder / name).mkdir(parents=True, exist_ok=True)
        for source, target in ((half1, HALF1_NAME), (half2, HALF2_NAME)):
            link = folder / name / target
            if link.is_symlink() or link.exists():
                link.unlink()
            os.symlink(os.path.abspath(source), link)
        names.append(name)
    return names


@dataclass
class PostprocessedMap:
    """One pair's result.

    Attributes
    ----------
    filtered : pathlib.Path
        The filtered (and sharpened) average of the half maps.
    resolution : float
        Global resolution (Å, FSC 1/7; RECOVAR writes 999 when even the first shell is below),
        or the median local resolution with ``local``.
    bfactor : float or None
        The B-factor applied (given or estimated), Å².
    local_resolution : pathlib.Path or None
        Local resolution map (``local`` only).
    bfactor_plot : pathlib.Path or None
        RECOVAR's B-factor fit figure (``--estimate-B-factor``).
    """

    filtered: Path
    resolution: float
    bfactor: float = None
    local_resolution: Path = None
    bfactor_plot: Path = None


def read_postprocess(output_dir, names, local=False):
    """Results of a batch ``postprocess`` run for the volume ``names``.

    Raises
    ------
    RecovarResultError
        If a pair has no filtered map (RECOVAR logged the error and went on).
    """
    output_dir = Path(output_dir)
    results = []
    for name in names:
        stem = name + (LOCAL_SUFFIX if local else GLOBAL_SUFFIX)
        filtered = output_dir / f'{stem}.mrc'
        info = output_dir / f'{stem}{INFO_SUFFIX}'
        if not filtered.is_file() or not info.is_file():
            raise RecovarResultError(filtered, f'not written: RECOVAR postprocess failed on '
                                               f'{name}; last lines of its log:\n'
                                               f'{log_tail(output_dir)}')
        text = info.read_text(errors='replace')
        match = (_MEDIAN_LOCAL if local else _RESOLUTION).search(text)
        bfactor = _ESTIMATED_B.search(text) or _APPLIED_B.search(text)
        plot = output_dir / f'{stem}{BFACTOR_PLOT_SUFFIX}'
        results.append(PostprocessedMap(
            filtered=filtered, resolution=float(match.group(1)) if match else float('nan'),
            bfactor=float(bfactor.group(1)) if bfactor else None,
            local_resolution=(output_dir / f'{stem}{LOCAL_RESOLUTION_SUFFIX}') if local else None,
            bfactor_plot=plot if plot.is_file() else None))
    return results


def recovar_bfactor(bfactor, voxel_size):
    """The ``--B-factor`` of RECOVAR 1.0.5 that sharpens by ``bfactor`` A^2 (see above)."""
    return float(bfactor) / float(voxel_size) ** 2


def write_bfactors(path, names, bfactors):
    """Record the B-factor (A^2, None for none) applied to each volume, as JSON."""
    with atomic_path(path) as tmp, open(tmp, 'w') as fh:
        json.dump(dict(zip(names, bfactors)), fh, indent=1)


def read_bfactors(path, names):
    """The B-factors :func:`write_bfactors` recorded, in the order of ``names``."""
    path = Path(path)
    if not path.is_file():
        raise RecovarResultError(path, 'B-factor record not found')
    with open(path) as fh:
        recorded = json.load(fh)
    missing = [n for n in names if n not in recorded]
    if missing:
        raise RecovarResultError(path, f'no B-factor recorded for {", ".join(missing)}')
    return [recorded[n] for n in names]
