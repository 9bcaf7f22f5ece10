"""Figures of the particle classifier: training, test set, picks and particle galleries.

Every function returns a :class:`matplotlib.figure.Figure` made without pyplot (no GUI
backend, nothing global), to be saved with ``fig.savefig`` or embedded by a viewer. Inputs are
the tables the backend writes (see :mod:`scipion_reciprocal.core.picking`).
"""

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from ..core.picking import confusion_matrix, roc_curve, roc_auc

CLASS_NAMES = ('bad', 'good')


def _figure(width, height):
    fig = Figure(figsize=(width, height), layout='constrained')
    FigureCanvasAgg(fig)
    return fig


def learning_curves_figure(history, kept_epoch=None):
    """Loss and accuracy per epoch, training and validation, with the chosen epochs marked.

    Parameters
    ----------
    history : pandas.DataFrame
        ``history.csv``: ``epoch, loss, acc, val_loss, val_acc``.
    kept_epoch : int, optional
        The epoch whose weights the model kept (``model.json`` ``training.kept_epoch``),
        marked when it is not the epoch of lowest validation loss.
    """
    fig = _figure(9, 3.6)
    best = int(history.loc[history['val_loss'].idxmin(), 'epoch']) if len(history) else None
    for ax, key, label in zip(fig.subplots(1, 2), ('loss', 'acc'), ('loss', 'accuracy')):
        ax.plot(history['epoch'], history[key], 'o-', label='training')
        ax.plot(history['epoch'], history[f'val_{key}'], 's-', label='validation')
        if best is not None:
            ax.axvline(best, color='0.5', ls='--', lw=1,
                       label=f'lowest validation loss (epoch {best})')
        if kept_epoch is not None and kept_epoch != best:
            ax.axvline(kept_epoch, color='C2', ls=':', lw=1.5, label=f'kept (epoch {kept_epoch})')
        ax.set_xlabel('epoch')
        ax.set_ylabel(label)
        ax.legend(frameon=False)
    fig.suptitle('learning curves')
    return fig


def roc_figure(labels, scores):
    """ROC curve of held-out particles (``test_scores.csv``), its area in the legend."""
    fpr, tpr, _ = roc_curve(labels, scores)
    fig = _figure(4.2, 4.2)
    ax = fig.subplots()
    ax.plot(fpr, tpr, lw=2, label=f'AUC {roc_auc(labels, scores):.3f}')
    ax.plot([0, 1], [0, 1], color='0.6', ls=':', lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel('false positive rate (bad called good)')
    ax.set_ylabel('true positive rate (good called good)')
    ax.set_title(f'ROC, {int(np.sum(labels))} good / {int(np.sum(np.logical_not(labels)))} bad')
    ax.legend(loc='lower right', frameon=False)
    return fig


def confusion_figure(labels, scores, threshold=0.5):
    """Confusion matrix at a threshold: counts and the fraction of each true class."""
    matrix = confusion_matrix(labels, scores, threshold)
    fractions = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig = _figure(4.2, 3.8)
    ax = fig.subplots()
    image = ax.imshow(fractions, cmap='Blues', vmin=0, vmax=1)
    for i in range(2):
        for j in range(2):
            ax.text(j, i, f'{matrix[i, j]}\n{100 * fractions[i, j]:.1f}%', ha='center',
                    va='center', color='white' if fractions[i, j] > 0.6 else 'black')
    ax.set_xticks([0, 1], [f'called {c}' for c in CLASS_NAMES])
    ax.set_yticks([0, 1], [f'true {c}' for c in CLASS_NAMES])
    ax.set_title(f'confusion matrix (threshold {threshold:g})')
    fig.colorbar(image, ax=ax, label='fraction of true class')
    return fig


def _display(micrograph, max_pixels):
    """Micrograph binned by block averaging to at most ``max_pixels`` a side, and its extent."""
    image = np.asarray(micrograph, dtype=np.float32)
    ny, nx = image.shape
    factor = max(1, int(np.ceil(max(ny, nx) / max_pixels)))
    if factor > 1:
        ny, nx = ny - ny % factor, nx - nx % factor
        image = image[:ny, :nx].reshape(ny // factor, factor, nx // factor, factor)
        image = image.mean(axis=(1, 3))
    low, high = np.percentile(image, [1, 99])
    return image, (-0.5, nx - 0.5, ny - 0.5, -0.5), (low, high)


def picks_figure(micrograph, picks, box, rejected=None, truth=None, title=None,
                 max_pixels=512):
    """A micrograph with its picks drawn as circles coloured by score.

    Parameters
    ----------
    micrograph : numpy.ndarray
        ``(ny, nx)`` image in its own pixels.
    picks : pandas.DataFrame
        ``x``, ``y``, ``score`` of this micrograph's picks (micrograph pixels).
    box : float
        Circle diameter in micrograph pixels (the model's box times the binning).
    rejected : pandas.DataFrame, optional
        Rejected peaks (``x``, ``y``), drawn as thin grey circles.
    truth : pandas.DataFrame, optional
        Known particle positions (``x``, ``y``), drawn as small green crosses.
    title : str, optional
        Axes title (default: the number of picks).
    max_pixels : int
        The image is block-averaged for display down to this size.
    """
    image, extent, (low, high) = _display(micrograph, max_pixels)
    fig = _figure(7.5, 6.5)
    ax = fig.subplots()
    ax.imshow(image, cmap='gray', vmin=low, vmax=high, extent=extent, interpolation='nearest')
    norm = Normalize(0.0, 1.0)
    cmap = colormaps['plasma']
    if rejected is not None:
        for x, y in zip(rejected['x'], rejected['y']):
            ax.add_patch(Circle((x, y), box / 2, fill=False, ec='0.6', lw=0.6, ls=':'))
    for x, y, s in zip(picks['x'], picks['y'], picks['score']):
        ax.add_patch(Circle((x, y), box / 2, fill=False, ec=cmap(norm(s)), lw=1.5))
    if truth is not None:
        ax.plot(truth['x'], truth['y'], '+', color='lime', ms=6, label='true')
        ax.legend(loc='upper right', fontsize='small')
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label='score', shrink=0.8)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_title(title or f'{len(picks)} picks')
    return fig


def score_map_figure(scores, y, x, micrograph=None, title=None, max_pixels=512):
    """Window scores over the micrograph (from :func:`core.picking.read_score_map`).

    Parameters
    ----------
    scores : numpy.ndarray
        ``(ny, nx)`` window scores.
    y, x : numpy.ndarray
        Window centres in micrograph pixels.
    micrograph : numpy.ndarray, optional
        Shown underneath, in grey, with the score map half transparent.
    """
    fig = _figure(7.5, 6.5)
    ax = fig.subplots()
    dy = y[1] - y[0] if len(y) > 1 else 1.0
    dx = x[1] - x[0] if len(x) > 1 else 1.0
    extent = (x[0] - dx / 2, x[-1] + dx / 2, y[-1] + dy / 2, y[0] - dy / 2)
    alpha = 1.0
    if micrograph is not None:
        image, mic_extent, (low, high) = _display(micrograph, max_pixels)
        ax.imshow(image, cmap='gray', vmin=low, vmax=high, extent=mic_extent)
        alpha = 0.55
        extent_all = mic_extent
    else:
        extent_all = extent
    shown = ax.imshow(scores, cmap='viridis', vmin=0, vmax=1, extent=extent, alpha=alpha,
                      interpolation='nearest')
    ax.set_xlim(extent_all[0], extent_all[1])
    ax.set_ylim(extent_all[2], extent_all[3])
    fig.colorbar(shown, ax=ax, label='score', shrink=0.8)
    ax.set_title(title or 'score map')
    return fig


def gallery_figure(images, scores, n=24, highest=True, columns=8, title=None):
    """The ``n`` highest- (or lowest-) scored particles, each labelled with its score.

    Parameters
    ----------
    images : numpy.ndarray
        ``(m, box, box)`` particle images.
    scores : numpy.ndarray
        ``(m,)`` scores.
    n : int
        Number shown (at most ``m``).
    highest : bool
        Highest scores first when true, lowest first otherwise.
    columns : int
        Images per row.
    """
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores if highest else scores, kind='stable')[:n]
    rows = max(1, int(np.ceil(len(order) / columns)))
    fig = _figure(1.3 * columns, 1.45 * rows + 0.4)
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, index in zip(axes, order):
        image = np.asarray(images[index], dtype=np.float32)
        low, high = np.percentile(image, [1, 99])
        ax.imshow(image, cmap='gray', vmin=low, vmax=high)
        ax.set_title(f'{scores[index]:.3f}', fontsize=8)
    fig.suptitle(title or f'{"highest" if highest else "lowest"} scored particles')
    return fig


def score_histogram_figure(scores, threshold=0.5, title=None):
    """Histogram of particle scores with the threshold that splits good from bad."""
    scores = np.asarray(scores, dtype=np.float64)
    fig = _figure(5.5, 3.5)
    ax = fig.add_subplot(111)
    ax.hist(scores, bins=np.linspace(0, 1, 41), color='#1f77b4')
    ax.axvline(threshold, color='#d62728', linestyle='--',
               label='threshold %g: %d good, %d bad' % (threshold, np.sum(scores >= threshold),
                                                       np.sum(scores < threshold)))
    ax.set_xlabel('score (probability of a good particle)')
    ax.set_ylabel('particles')
    ax.legend(loc='upper center')
    ax.set_title(title or 'particle scores')
    fig.tight_layout()
    return fig
