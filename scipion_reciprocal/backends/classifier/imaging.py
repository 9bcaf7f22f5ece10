"""Numpy image operations shared by the classifier backend's subcommands.

Nothing here imports TensorFlow or anything outside numpy, so the module also runs (and is
tested) in Scipion's own environment. Images are indexed ``[..., y, x]``; the centre of a box of
``n`` pixels is index ``n // 2`` (RELION's convention).
"""

import math

import numpy as np

#: Normalisation modes: ``none`` keeps intensities, ``box`` and ``circle`` scale each image to
#: zero mean and unit standard deviation measured over the whole box or the inscribed circle.
NORMALIZE_MODES = ('none', 'box', 'circle')
#: Smallest working box (even) whose features survive the CNN's three convolution + pooling
#: stages (see ``cnn.build_model``).
MIN_BOX = 24


def fourier_resample(images, shape):
    """Resample images to a new grid by cropping or zero-padding their Fourier transform.

    Parameters
    ----------
    images : numpy.ndarray
        ``(..., ny, nx)`` real images.
    shape : tuple of int
        Output size ``(my, mx)``.

    Returns
    -------
    numpy.ndarray
        ``(..., my, mx)`` float32 images. Output pixel ``i`` samples input position
        ``i * n / m``; mean intensity is kept. Frequencies above the smaller grid's Nyquist
        are dropped, and so is the unpaired Nyquist bin of an even-sized smaller grid.
        Transforms run in float64 (numpy's float32 transforms are slower as well as less
        precise).
    """
    images = np.asarray(images)
    ny, nx = images.shape[-2:]
    my, mx = int(shape[0]), int(shape[1])
    if (my, mx) == (ny, nx):
        return images.astype(np.float32, copy=False)
    if my < 1 or mx < 1:
        raise ValueError(f'cannot resample to {my}x{mx} pixels')
    spectrum = np.fft.rfft(images.astype(np.float64, copy=False), axis=-1)
    half = min(nx, mx) // 2 + 1
    cols = np.zeros(spectrum.shape[:-1] + (mx // 2 + 1,), dtype=spectrum.dtype)
    cols[..., :half] = spectrum[..., :half]
    if min(nx, mx) % 2 == 0:
        cols[..., min(nx, mx) // 2] = 0
    spectrum = np.fft.fft(cols, axis=-2)
    small = min(ny, my)
    pos, neg = (small - 1) // 2 + 1, small // 2
    rows = np.zeros(spectrum.shape[:-2] + (my, spectrum.shape[-1]), dtype=spectrum.dtype)
    rows[..., :pos, :] = spectrum[..., :pos, :]
    if small % 2 == 0:
        neg -= 1
    if neg:
        rows[..., my - neg:, :] = spectrum[..., ny - neg:, :]
    out = np.fft.irfft(np.fft.ifft(rows, axis=-2), n=mx, axis=-1)
    out *= (my * mx) / (ny * nx)
    return out.astype(np.float32)


def resampled_size(n, pixel_size, target_pixel_size):
    """Number of pixels that cover ``n`` pixels of ``pixel_size`` at ``target_pixel_size``."""
    return max(1, int(round(n * pixel_size / target_pixel_size)))


def fit_box(images, box):
    """Crop or pad square images about their centre to ``box`` pixels.

    Parameters
    ----------
    images : numpy.ndarray
        ``(n, size, size)`` images.
    box : int
        Output size; padding uses each image's mean, so normalisation is unaffected by it.

    Returns
    -------
    numpy.ndarray
        ``(n, box, box)`` float32 images with the centre pixel ``size // 2`` moved to
        ``box // 2``.
    """
    images = np.asarray(images, dtype=np.float32)
    size = images.shape[-1]
    if size == box:
        return images
    if size > box:
        start = size // 2 - box // 2
        return np.ascontiguousarray(images[:, start:start + box, start:start + box])
    out = np.empty((images.shape[0], box, box), dtype=np.float32)
    out[...] = images.mean(axis=(1, 2))[:, None, None]
    start = box // 2 - size // 2
    out[:, start:start + size, start:start + size] = images
    return out


def to_working_grid(images, pixel_size, target_pixel_size, box):
    """Bring square images of one pixel size to the working pixel size and box.

    Parameters
    ----------
    images : numpy.ndarray
        ``(n, size, size)`` images at ``pixel_size`` Å.
    pixel_size, target_pixel_size : float
        Input and working pixel sizes in Å.
    box : int
        Working box in pixels.

    Returns
    -------
    numpy.ndarray
        ``(n, box, box)`` float32: Fourier-resampled to ``round(size * pixel_size /
        target_pixel_size)`` pixels (so the working pixel size is met to within half a pixel
        over the box), then centre-cropped or padded to ``box``.
    """
    size = images.shape[-1]
    new = resampled_size(size, pixel_size, target_pixel_size)
    if new != size:
        images = fourier_resample(images, (new, new))
    return fit_box(images, box)


def circle_mask(box):
    """Boolean ``(box, box)`` disc of radius ``box / 2`` centred on pixel ``box // 2``."""
    axis = np.arange(box) - box // 2
    return axis[:, None] ** 2 + axis[None, :] ** 2 <= (box / 2.0) ** 2


def normalization_weights(box, mode):
    """Pixel weights over which image statistics are measured, or None for ``none``.

    Returns
    -------
    numpy.ndarray or None
        ``(box, box)`` float32 mask of ones (``box``) or of the inscribed disc (``circle``).
    """
    if mode not in NORMALIZE_MODES:
        raise ValueError(f'normalisation must be one of {NORMALIZE_MODES}, got {mode!r}')
    if mode == 'none':
        return None
    if mode == 'box':
        return np.ones((box, box), dtype=np.float32)
    return circle_mask(box).astype(np.float32)


def normalize(images, mode):
    """Scale each image to zero mean and unit standard deviation.

    Parameters
    ----------
    images : numpy.ndarray
        ``(n, box, box)`` images.
    mode : str
        ``none`` (returned as float32, unchanged), ``box`` or ``circle`` (statistics measured
        over the whole box or the inscribed disc, applied to the whole box).

    Returns
    -------
    numpy.ndarray
        ``(n, box, box)`` float32. A constant image becomes all zeros.
    """
    images = np.asarray(images, dtype=np.float32)
    weights = normalization_weights(images.shape[-1], mode)
    if weights is None:
        return images
    inside = images[:, weights > 0]
    mean = inside.mean(axis=1)
    std = inside.std(axis=1)
    inv = np.divide(1.0, std, out=np.zeros_like(std), where=std > 0)
    return (images - mean[:, None, None]) * inv[:, None, None]


def augment_dihedral(images, rng):
    """Apply a random one of the 8 square symmetries (90° rotations, flips) to each image.

    The symmetry is taken about the centre pixel ``box // 2``: for an even box the first row
    and column, which have no partner, are left as they are.

    Parameters
    ----------
    images : numpy.ndarray
        ``(n, box, box)`` images.
    rng : numpy.random.Generator
        Source of the random choices.

    Returns
    -------
    numpy.ndarray
        New ``(n, box, box)`` array.
    """
    out = np.array(images, copy=True)
    start = 1 - images.shape[-1] % 2
    core = images[:, start:, start:]
    turns = rng.integers(0, 4, len(images))
    flips = rng.integers(0, 2, len(images)).astype(bool)
    for k in range(4):
        for flip in (False, True):
            sel = (turns == k) & (flips == flip)
            if not sel.any():
                continue
            moved = np.rot90(core[sel], k, axes=(1, 2))
            out[sel, start:, start:] = moved[:, :, ::-1] if flip else moved
    return out


def random_shifts(images, rng, max_shift):
    """Move each image by a random whole number of pixels, at most ``max_shift`` per axis.

    Pixels moved out on one side come back on the other (``numpy.roll``), so the image
    statistics are unchanged.

    Returns
    -------
    numpy.ndarray
        New ``(n, box, box)`` array.
    """
    if max_shift <= 0:
        return np.array(images, copy=True)
    shifts = rng.integers(-max_shift, max_shift + 1, (len(images), 2))
    return np.stack([np.roll(image, tuple(shift), axis=(0, 1))
                     for image, shift in zip(images, shifts)])


def window_grid(shape, box, stride):
    """Number of sliding-window positions ``(ny, nx)`` along each axis of an image."""
    return ((shape[0] - box) // stride + 1, (shape[1] - box) // stride + 1)


def sliding_windows(image, box, stride):
    """All ``box``-sized windows of an image at a given stride, as a view (no copy).

    Returns
    -------
    numpy.ndarray
        ``(ny, nx, box, box)`` read-only view; window ``(i, j)`` starts at pixel
        ``(i * stride, j * stride)`` and is centred on ``(i * stride + box // 2,
        j * stride + box // 2)``.
    """
    view = np.lib.stride_tricks.sliding_window_view(image, (box, box))
    return view[::stride, ::stride]


def local_peaks(values):
    """Mask of grid points not smaller than any of their 8 neighbours."""
    padded = np.pad(values, 1, mode='constant', constant_values=-np.inf)
    ny, nx = values.shape
    peak = np.ones(values.shape, dtype=bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy == 1 and dx == 1:
                continue
            peak &= values >= padded[dy:dy + ny, dx:dx + nx]
    return peak


def suppress_non_maxima(values, spacing, min_distance):
    """Greedy non-maximum suppression on a regular grid of scores.

    Candidates are the local peaks of ``values`` (see :func:`local_peaks`); taken in
    decreasing order (ties by grid order), a candidate is kept unless a kept one lies closer
    than ``min_distance``.

    Parameters
    ----------
    values : numpy.ndarray
        ``(ny, nx)`` scores (any monotonic score: logits rank like probabilities).
    spacing : float
        Distance between neighbouring grid points, in the unit of ``min_distance``.
    min_distance : float
        Smallest allowed distance between two kept points.

    Returns
    -------
    tuple of numpy.ndarray
        ``(iy, ix)`` grid indices of the kept points, highest score first.
    """
    iy, ix = np.nonzero(local_peaks(values))
    order = np.argsort(-values[iy, ix], kind='stable')
    iy, ix = iy[order], ix[order]
    if min_distance <= 0 or len(iy) == 0:
        return iy, ix
    radius = min_distance / spacing
    cell = max(radius, 1.0)
    buckets = {}
    keep = []
    reach = int(math.ceil(radius / cell))
    for n, (y, x) in enumerate(zip(iy.tolist(), ix.tolist())):
        cy, cx = int(y // cell), int(x // cell)
        clash = False
        for by in range(cy - reach, cy + reach + 1):
            for bx in range(cx - reach, cx + reach + 1):
                for ky, kx in buckets.get((by, bx), ()):
                    if (ky - y) ** 2 + (kx - x) ** 2 < radius ** 2:
                        clash = True
                        break
                if clash:
                    break
            if clash:
                break
        if not clash:
            buckets.setdefault((cy, cx), []).append((y, x))
            keep.append(n)
    keep = np.asarray(keep, dtype=int)
    return iy[keep], ix[keep]


def sigmoid(logits):
    """Logistic function in float64, stable for large magnitudes."""
    logits = np.asarray(logits, dtype=np.float64)
    out = np.empty_like(logits)
    pos = logits >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-logits[pos]))
    e = np.exp(logits[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def stratified_split(labels, fractions, seed):
    """Shuffled train/validation/test split that keeps the class proportions.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(n,)`` integer class labels.
    fractions : sequence of float
        Train, validation and test fractions (positive, summing to 1).
    seed : int
        Seed of the shuffle.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` int8 part of each particle: 0 train, 1 validation, 2 test. Every class has
        at least one particle in each part.

    Raises
    ------
    ValueError
        If a class has fewer than 3 particles or the fractions are invalid.
    """
    fractions = np.asarray(fractions, dtype=float)
    if fractions.shape != (3,) or np.any(fractions <= 0) or abs(fractions.sum() - 1) > 1e-6:
        raise ValueError(f'fractions must be three positive numbers summing to 1, '
                         f'got {",".join(str(f) for f in fractions)}')
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    part = np.zeros(len(labels), dtype=np.int8)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n = len(members)
        if n < 3:
            raise ValueError(f'class {label} has {n} particle(s); at least 3 are needed to '
                             f'split into train, validation and test')
        n_val = min(max(1, int(round(fractions[1] * n))), n - 2)
        n_test = min(max(1, int(round(fractions[2] * n))), n - 1 - n_val)
        part[members[n - n_val - n_test:n - n_test]] = 1
        part[members[n - n_test:]] = 2
    return part


def roc_auc(labels, scores):
    """Area under the ROC curve (Mann-Whitney statistic, ties counted as one half).

    Returns
    -------
    float
        NaN when one class is absent.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float('nan')
    order = np.argsort(scores, kind='mergesort')
    sorted_scores = scores[order]
    ranks = np.empty(len(scores))
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = 0.5 * (start + end + 1)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def binary_report(labels, scores, threshold=0.5):
    """Test-set figures of a good (1) / bad (0) classifier.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(n,)`` true labels, 1 good and 0 bad.
    scores : numpy.ndarray
        ``(n,)`` predicted probability of good.
    threshold : float
        A particle is called good when its score is at least ``threshold``.

    Returns
    -------
    dict
        ``accuracy``, ``precision``, ``recall``, ``f1``, ``roc_auc``, ``threshold``,
        ``n`` (``{"bad": .., "good": ..}``), ``confusion`` (``{"tn", "fp", "fn", "tp"}``) and
        ``confusion_matrix`` (rows true class, columns predicted, order bad, good).
        Undefined ratios are None.
    """
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(scores) >= threshold
    tp = int(np.sum(labels & predicted))
    tn = int(np.sum(~labels & ~predicted))
    fp = int(np.sum(~labels & predicted))
    fn = int(np.sum(labels & ~predicted))

    def ratio(a, b):
        return a / b if b else None

    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    f1 = (2 * precision * recall / (precision + recall)
          if precision and recall else None)
    auc = roc_auc(labels, scores)
    return {
        'n': {'bad': tn + fp, 'good': tp + fn},
        'threshold': float(threshold),
        'accuracy': ratio(tp + tn, len(labels)),
        'precision': precision,
        'recall': recall,
        'f1': f1,
        'roc_auc': None if math.isnan(auc) else auc,
        'confusion': {'tn': tn, 'fp': fp, 'fn': fn, 'tp': tp},
        'confusion_matrix': [[tn, fp], [fn, tp]],
    }
