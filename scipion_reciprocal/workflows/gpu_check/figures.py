"""Correctness figures of the GPU check, computed against the simulated truth."""
import numpy as np
from scipy import ndimage
from sklearn.metrics import adjusted_rand_score

from ...core.mapsim.grid import lowpass_filter
from ...core.picking import evaluate_picks


def mean_vs_truth(mean, maps, states, pixel_size, resolution):
    """Correlation of a reconstructed mean with the particles' state-weighted true map.

    Both maps are low-passed to ``resolution`` Å first. Also returned: the correlation with
    the true map magnified 2x about the box centre, which is what RECOVAR 1.0.5's JAX
    back-projection produces (docs/recovar-1.0.5.md), so a run on that path shows itself.
    """
    mean = np.asarray(mean, dtype=np.float64)
    if mean.shape != maps.shape[1:]:
        raise ValueError("the mean is %s voxels, the true maps %s" % (mean.shape, maps.shape[1:]))
    weights = np.bincount(states, minlength=len(maps)) / len(states)
    truth = np.tensordot(weights, maps, axes=1)

    def filtered(volume):
        return lowpass_filter(volume, pixel_size, resolution)

    reconstructed = filtered(mean)
    return {"mean_vs_truth": correlation(reconstructed, filtered(truth)),
            "mean_vs_truth_magnified_2x": correlation(reconstructed, filtered(magnified(truth, 2.0)))}


def magnified(volume, factor):
    """``volume`` magnified ``factor`` times about its centre voxel (index box // 2)."""
    centre = np.full(3, volume.shape[0] // 2, dtype=float)
    return ndimage.affine_transform(volume, np.eye(3) / factor, offset=centre - centre / factor,
                                    order=3)


def correlation(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def kmeans_agreement(labels, states):
    """Adjusted Rand index of k-means labels against the true states (rows labelled -1,
    i.e. left out by RECOVAR, are not counted) and the number of rows compared."""
    labels, states = np.asarray(labels), np.asarray(states)
    kept = labels >= 0
    return {"kmeans_ari": float(adjusted_rand_score(states[kept], labels[kept])),
            "kmeans_particles": int(kept.sum())}


def precision_recall(called_good, truly_good):
    """Precision and recall of particles called good, against the truth (boolean arrays)."""
    called_good, truly_good = np.asarray(called_good, bool), np.asarray(truly_good, bool)
    hits = int(np.sum(called_good & truly_good))
    return {"precision": hits / called_good.sum() if called_good.any() else None,
            "recall": hits / truly_good.sum() if truly_good.any() else None,
            "n": int(len(called_good))}


def pick_figures(picks, truth, box):
    """Precision, recall and F1 of picks (micrograph, x, y) matched one-to-one to the true
    particle centres within half a box."""
    figures = evaluate_picks(picks, truth, radius=box / 2)
    return {key: figures[key] for key in ("precision", "recall", "f1", "n_picks", "n_true")}
