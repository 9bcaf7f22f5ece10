"""Draw the figures of a reciprocal analysis in forked processes while the caller goes on
writing its other files (tables, subset STAR files); matplotlib is imported only there."""
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from ..formats.result_folder import as_result_folder

#: Which figures to draw: every one; those of the whole analysis and of each job (Sankey,
#: agreement, convergence, class slices: no pairwise heatmaps, whose numbers are in
#: ``matrices/``); none.
PLOT_CHOICES = ('all', 'summary', 'none')


def start_plots(result, out, inputs=None, which='all', processes=1):
    """Start drawing the figures ``which`` names (:data:`PLOT_CHOICES`) into the result
    folder ``out``, in ``processes`` forked processes (0: now, in this process).

    ``inputs`` returns (histories, maps) as :func:`.reciprocal.save_plots` takes them; it is
    called where the per-job figures are drawn. Returns a :class:`PlotJob`.
    """
    if which not in PLOT_CHOICES:
        raise ValueError(f'plots must be one of {", ".join(PLOT_CHOICES)}, not {which!r}')
    out = as_result_folder(out)
    task = result, which, inputs or (lambda: (None, None)), out.root
    if not processes:
        return PlotJob(out, [_draw(task, 0, 1)])
    global _TASK
    _TASK = task        # what the forked processes find
    pool = ProcessPoolExecutor(processes, mp_context=get_context('fork'),
                               initializer=_end_with_parent, initargs=(os.getpid(),))
    try:
        return PlotJob(out, [pool.submit(_draw_forked, k, processes) for k in range(processes)],
                       pool)
    finally:
        _TASK = None


class PlotJob:
    """Figures being drawn: :meth:`wait` records them in the result folder and returns
    their paths (or raises what a drawing process raised)."""

    def __init__(self, out, parts, pool=None):
        self._out, self._parts, self._pool = out, parts, pool

    def wait(self):
        try:
            done = [p.result() if hasattr(p, 'result') else p for p in self._parts]
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
        return [self._out.add(self._out.path(rel)) for part in done for rel in part]


_TASK = None


def _end_with_parent(parent):
    """End this drawing process as soon as the run that started it is gone (killed): no
    figure may appear after the run stopped, and a pool worker would otherwise wait for work
    for ever, holding the run's stdout and stderr open."""
    def watch():
        while os.getppid() == parent:
            time.sleep(0.1)
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def _draw_forked(part, parts):
    return _draw(_TASK, part, parts)


def _draw(task, part, parts):
    """Draw every ``parts``-th figure from ``part`` on; the relative paths written."""
    from .reciprocal import figure_entries
    result, which, inputs, root = task
    return [rel for write in figure_entries(result, which, inputs)[part::parts]
            for rel in write(root)]
