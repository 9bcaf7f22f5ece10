"""Figures of the consensus verdict: what they mark, and that their text is readable (inside
the figure, no label over another)."""
import numpy as np
import pandas as pd
import pytest
from matplotlib.patches import Rectangle

from scipion_reciprocal.core.reciprocal import classification_from_dataframe, reciprocal_analysis
from scipion_reciprocal.core.verdict import consensus_verdict
from scipion_reciprocal.plotting.verdict import enrichment_figure
from scipion_reciprocal.simulate.consensus_runs import simulate_runs


def _result(n_runs, n_states=3, n=3000):
    sim = simulate_runs(n, n_states, n_runs=n_runs, flip_fraction=0.15, seed=1)
    runs = [classification_from_dataframe(pd.DataFrame({'id': np.arange(n), 'class': labels}),
                                          f'job{r + 85:03d}', key='id')
            for r, labels in enumerate(sim.labels)]
    result = reciprocal_analysis(runs, min_group_size=10)
    result.verdict = consensus_verdict(result)
    return result


def _text_boxes(fig):
    """Window extents of the suptitle and of every axes' title and axis labels."""
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    texts = [fig._suptitle] + [t for ax in fig.axes if ax.get_visible() and ax.axison
                               for t in (ax.title, ax.xaxis.label, ax.yaxis.label)]
    return [(t.get_text(), t.get_window_extent(renderer)) for t in texts if t.get_text()]


@pytest.mark.parametrize('n_runs', [2, 5])
def test_enrichment_text_is_inside_the_figure_and_never_overlaps(n_runs):
    fig = enrichment_figure(_result(n_runs))
    boxes = _text_boxes(fig)
    width, height = fig.canvas.get_width_height()
    for text, box in boxes:
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, text
    for i, (text, box) in enumerate(boxes):
        for other, other_box in boxes[i + 1:]:
            assert not box.overlaps(other_box), (text, other)


def test_enrichment_marks_significant_cells_and_frames_reproduced_pairs():
    result = _result(2)
    verdict = result.verdict
    ax = enrichment_figure(result).axes[0]
    stars = [t for t in ax.texts if t.get_text() == '*']
    significant = verdict.significance['q_value'].to_numpy() <= 0.05
    assert len(stars) == significant.sum() > 0
    frames = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(frames) == verdict.reproduced[('job085', 'job086')].sum() == 3
