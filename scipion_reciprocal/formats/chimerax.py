"""ChimeraX command files (``.cxc``) that show a list of maps as one volume series."""
import os
from pathlib import Path

from ._atomic import atomic_path

__all__ = ['volume_series_commands', 'write_volume_series']


def _quoted(path):
    text = str(path).replace(os.sep, '/')
    return f'"{text}"' if any(ch.isspace() for ch in text) else text


def volume_series_commands(volumes, level=None, color='#5f9ea0', play=True, title=None):
    """ChimeraX commands opening ``volumes`` as one series, in the given order.

    The series becomes model #1 of a fresh ChimeraX session (Scipion's ChimeraX viewer starts
    one); paths are written absolute.

    Parameters
    ----------
    volumes : sequence of str or os.PathLike
        MRC files of one box size, e.g. the maps along a RECOVAR trajectory or its k-means
        centres.
    level : float, optional
        Surface threshold for every frame (ChimeraX's automatic level when omitted).
    color : str
        Surface colour.
    play : bool
        Play the series back and forth once opened.
    title : str, optional
        A comment line naming the series.

    Returns
    -------
    str
        The commands, one per line.
    """
    if not len(volumes):
        raise ValueError('no volumes to open')
    names = [_quoted(Path(volume).resolve()) for volume in volumes]
    lines = [f'# {title}' if title else f'# {len(names)} maps as a volume series',
             f'open {" ".join(names)} vseries true']
    style = f'volume #1 style surface color {color}'
    lines.append(style + (f' level {level:g}' if level is not None else ''))
    if play and len(names) > 1:
        lines.append('vseries play #1 loop true direction oscillate')
    lines.append('view')
    return '\n'.join(lines) + '\n'


def write_volume_series(path, volumes, **options):
    """Write :func:`volume_series_commands` to ``path`` (a ``.cxc`` file); returns the path."""
    path = Path(path)
    text = volume_series_commands(volumes, **options)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path
