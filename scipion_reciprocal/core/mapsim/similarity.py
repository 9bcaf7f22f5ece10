"""Similarity of many maps: masked correlation and FSC, streamed through bounded memory.

The correlation matrix of N maps is the Gram matrix of their normalised masked vectors
``x_i = sqrt(w) (v_i - mean_w(v_i)) / norm``: ``C = X X^T``. The vectors are written once to a
:class:`VectorStore` (in memory when they fit the budget, else a temporary file) and the Gram
matrix is accumulated over slabs of voxels, ``C += X[:, a:b] X[:, a:b]^T`` (float32 products
over 65536 columns, summed in float64), so only one slab of all maps is ever in memory. FSC
works the same way on Fourier coefficients sorted by shell: one Gram matrix per shell.
"""
import os
import tempfile

import numpy as np
from scipy import fft

from .errors import MapClusteringError
from .grid import weighted_stats

#: Default memory budget (bytes) of a vector store and of the Gram slabs.
DEFAULT_BUDGET = 1 << 30

FSC_THRESHOLDS = (0.143, 0.5)


class VectorStore:
    """N float32 vectors of one length, in memory or in a temporary file.

    Parameters
    ----------
    n : int
        Number of vectors.
    length : int
        Length of each vector.
    memory_budget : int
        Bytes allowed in memory; a larger store goes to a file.
    workdir : str, optional
        Folder of the temporary file (default: the system's).
    """

    def __init__(self, n, length, memory_budget=DEFAULT_BUDGET, workdir=None):
        self.n, self.length = n, length
        self.in_memory = n * length * 4 <= memory_budget
        if self.in_memory:
            self._array = np.zeros((n, length), dtype=np.float32)
            self._file = None
        else:
            self._array = None
            # Named like the plugin's other temporary files, so that a result folder used as
            # workdir removes it when a killed run left it behind.
            self.path = os.path.join(workdir or tempfile.gettempdir(),
                                     f'.mapsim-vectors.{os.urandom(6).hex()}.tmp')
            self._file = open(self.path, 'x+b')
            self._file.truncate(n * length * 4)

    def write(self, i, vector):
        """Store vector ``i``."""
        vector = np.ascontiguousarray(vector, dtype=np.float32)
        if vector.shape != (self.length,):
            raise ValueError(f'vector {i} has shape {vector.shape}, expected ({self.length},)')
        if self.in_memory:
            self._array[i] = vector
        else:
            self._file.seek(i * self.length * 4)
            self._file.write(vector.tobytes())

    def columns(self, start, stop, out=None):
        """Elements ``start:stop`` of every vector, as an ``(n, stop - start)`` float32 array."""
        if self.in_memory:
            return self._array[:, start:stop]
        width = stop - start
        out = np.empty((self.n, width), dtype=np.float32) if out is None else out[:, :width]
        self._file.flush()
        for i in range(self.n):
            self._file.seek((i * self.length + start) * 4)
            self._file.readinto(memoryview(out[i]).cast('B'))
        return out

    def close(self):
        """Release the memory or delete the file."""
        self._array = None
        if self._file is not None:
            self._file.close()
            os.unlink(self.path)
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def masked_vector(volume, weights=None, inside=None, name='map'):
    """The normalised masked vector of a map, whose dot products are weighted correlations.

    Parameters
    ----------
    volume : numpy.ndarray
        The map.
    weights : numpy.ndarray, optional
        Mask weights in [0, 1] (None: every voxel, weight 1).
    inside : numpy.ndarray, optional
        Flat indices of the voxels with weight (default: where ``weights > 0``).
    name : str
        Name used in the error message.

    Returns
    -------
    numpy.ndarray
        float32 ``sqrt(w) (v - mean_w) / ||sqrt(w) (v - mean_w)||`` over the voxels in ``inside``
        (sums in float64).
    """
    flat = np.asarray(volume, dtype=np.float32).ravel()
    if weights is None:
        centred = flat - np.float32(flat.mean(dtype=np.float64))
    else:
        inside = np.flatnonzero(weights.ravel() > 0) if inside is None else inside
        values = flat[inside]
        w = weights.ravel()[inside].astype(np.float32)
        mean = np.sum(w * values, dtype=np.float64) / np.sum(w, dtype=np.float64)
        centred = (values - np.float32(mean)) * np.sqrt(w)
    norm = np.sqrt(np.sum(centred * centred, dtype=np.float64))
    if not norm > 0:
        raise MapClusteringError(f'map {name}: constant inside the mask, its correlation is '
                                 f'undefined')
    centred *= np.float32(1.0 / norm)
    return centred


#: Columns per float32 matrix product; partial Gram matrices are summed in float64.
_GEMM_COLUMNS = 1 << 16


def _add_gram(gram, block):
    """``gram += block block^T`` by float32 products over column chunks, summed in float64."""
    for start in range(0, block.shape[1], _GEMM_COLUMNS):
        part = np.ascontiguousarray(block[:, start:start + _GEMM_COLUMNS])
        gram += np.dot(part, part.T)


def gram_matrix(store, memory_budget=DEFAULT_BUDGET, segments=None):
    """Gram matrix of the vectors in a store, accumulated slab by slab in float64.

    Parameters
    ----------
    store : VectorStore
    memory_budget : int
        Bytes for one slab of all vectors read from a file store.
    segments : numpy.ndarray, optional
        Boundaries ``b_0 = 0 < b_1 < ... < b_S = length``; when given, one Gram matrix per
        segment is returned (used for FSC shells).

    Returns
    -------
    numpy.ndarray
        ``(n, n)``, or ``(S, n, n)`` with ``segments``.
    """
    n, length = store.n, store.length
    width = max(_GEMM_COLUMNS, int(memory_budget // (4 * max(n, 1))))
    buffer = None if store.in_memory else np.empty((n, min(width, length)), np.float32)
    if segments is None:
        gram = np.zeros((n, n))
        for start in range(0, length, width):
            _add_gram(gram, store.columns(start, min(start + width, length), buffer))
        return gram
    segments = np.asarray(segments)
    grams = np.zeros((len(segments) - 1, n, n))
    # Group whole segments into slabs of about ``width`` elements.
    seg = 0
    while seg < len(segments) - 1:
        last = seg + 1
        while last < len(segments) - 1 and segments[last + 1] - segments[seg] <= width:
            last += 1
        start, stop = int(segments[seg]), int(segments[last])
        if buffer is not None and buffer.shape[1] < stop - start:
            buffer = np.empty((n, stop - start), np.float32)
        block = store.columns(start, stop, buffer)
        for k in range(seg, last):
            _add_gram(grams[k], block[:, segments[k] - start:segments[k + 1] - start])
        seg = last
    return grams


class CorrelationAccumulator:
    """Collects maps one at a time, then gives their weighted correlation matrix.

    Parameters
    ----------
    n : int
        Number of maps.
    weights : numpy.ndarray, optional
        Soft mask (None: all voxels).
    memory_budget : int
        Bytes for the vector store in memory and for one Gram slab.
    workdir : str, optional
        Folder for the temporary file when the vectors exceed the budget.
    """

    def __init__(self, n, weights=None, memory_budget=DEFAULT_BUDGET, workdir=None):
        self.n, self.weights = n, weights
        self.budget, self.workdir = memory_budget, workdir
        self.inside = None if weights is None else np.flatnonzero(weights.ravel() > 0)
        self.store = None

    def add(self, i, volume, name=None):
        """Add map ``i``."""
        vector = masked_vector(volume, self.weights, self.inside, name or f'#{i + 1}')
        if self.store is None:
            self.store = VectorStore(self.n, vector.size, self.budget, self.workdir)
        self.store.write(i, vector)

    def result(self):
        """The ``(n, n)`` correlation matrix; releases the store."""
        try:
            return finish_correlation(gram_matrix(self.store, self.budget))
        finally:
            self.close()

    def close(self):
        """Release the vector store."""
        if self.store is not None:
            self.store.close()
            self.store = None


def correlation_matrix(volumes, weights=None, memory_budget=DEFAULT_BUDGET, workdir=None,
                       names=None):
    """Weighted Pearson correlation of every pair of maps, streaming.

    Parameters
    ----------
    volumes : sequence of numpy.ndarray
        Maps on one grid (a sequence with ``len``; items are read once, in order).
    weights : numpy.ndarray, optional
        Soft mask (None: all voxels).
    memory_budget : int
        Bytes for the vector store in memory and for one Gram slab.
    workdir : str, optional
        Folder for the temporary file when the vectors exceed the budget.
    names : sequence of str, optional
        Map names for error messages.

    Returns
    -------
    numpy.ndarray
        ``(n, n)`` correlation matrix (float64, exactly 1 on the diagonal).
    """
    acc = CorrelationAccumulator(len(volumes), weights, memory_budget, workdir)
    try:
        for i, volume in enumerate(volumes):
            acc.add(i, volume, names[i] if names else None)
        return acc.result()
    finally:
        acc.close()


def finish_correlation(gram):
    """Symmetrise a Gram matrix of unit vectors, clip to [-1, 1] and set the diagonal to 1."""
    corr = np.clip((gram + gram.T) / 2.0, -1.0, 1.0)
    np.fill_diagonal(corr, 1.0)
    return corr


# ----------------------------------------------------------------------------- FSC

class ShellLayout:
    """Fourier coefficients of a ``box``³ map (rfft layout) sorted by shell, up to Nyquist.

    Attributes
    ----------
    order : numpy.ndarray
        Flat rfft indices of the kept coefficients, sorted by shell.
    root_weight : numpy.ndarray
        sqrt of each coefficient's Hermitian multiplicity (1 or 2), in the same order.
    offsets : numpy.ndarray
        Boundaries of the shells in a vector that stores (Re, Im) pairs: shell ``s`` occupies
        ``offsets[s]:offsets[s + 1]``.
    n_shells : int
        Shells 0 .. box // 2.
    """

    def __init__(self, box):
        k = np.rint(fft.fftfreq(box) * box)
        kx = np.arange(box // 2 + 1)
        radius = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + kx[None, None, :] ** 2)
        shell = np.rint(radius).astype(np.int64).ravel()
        self.n_shells = box // 2 + 1
        keep = np.flatnonzero(shell < self.n_shells)
        self.order = keep[np.argsort(shell[keep], kind='stable')]
        multiplicity = np.full(box // 2 + 1, 2.0)
        multiplicity[0] = 1.0
        if box % 2 == 0:
            multiplicity[-1] = 1.0
        mult = np.broadcast_to(multiplicity[None, None, :], (box, box, box // 2 + 1)).ravel()
        self.root_weight = np.sqrt(mult[self.order])
        counts = np.bincount(shell[keep], minlength=self.n_shells)
        self.offsets = np.concatenate([[0], np.cumsum(2 * counts)])
        self.box = box

    def frequencies(self, voxel_size):
        """Spatial frequency (1/Å) of each shell."""
        return np.arange(self.n_shells) / (self.box * voxel_size)

    def vector(self, volume):
        """Real vector of the map's Fourier coefficients (Re, Im interleaved), shell-sorted."""
        spectrum = fft.rfftn(np.asarray(volume, dtype=np.float32), workers=2).ravel()[self.order]
        spectrum = spectrum * self.root_weight
        return np.column_stack([spectrum.real, spectrum.imag]).ravel().astype(np.float32)


def fsc_prepare(volume, weights=None):
    """The map as FSC sees it: mean removed inside the mask, times the mask."""
    mean, _ = weighted_stats(volume, weights)
    centred = np.asarray(volume, dtype=np.float32) - np.float32(mean)
    return centred if weights is None else centred * weights


def fsc_curve(a, b, voxel_size, weights=None):
    """Fourier shell correlation of two maps.

    Parameters
    ----------
    a, b : numpy.ndarray
        Maps on one cubic grid.
    voxel_size : float
        Voxel size (Å).
    weights : numpy.ndarray, optional
        Mask applied to both maps.

    Returns
    -------
    frequencies : numpy.ndarray
        Shells 1 .. box // 2, in 1/Å.
    fsc : numpy.ndarray
        FSC per shell.
    """
    layout = ShellLayout(a.shape[0])
    va = layout.vector(fsc_prepare(a, weights)).astype(np.float64)
    vb = layout.vector(fsc_prepare(b, weights)).astype(np.float64)
    off = layout.offsets
    cross = np.add.reduceat(va * vb, off[:-1])
    pa = np.add.reduceat(va * va, off[:-1])
    pb = np.add.reduceat(vb * vb, off[:-1])
    fsc = cross / np.sqrt(np.maximum(pa * pb, 1e-300))
    return layout.frequencies(voxel_size)[1:], fsc[1:]


class FSCAccumulator:
    """Collects maps one at a time, then gives the FSC curves of every pair.

    Parameters
    ----------
    n : int
        Number of maps.
    voxel_size : float
        Voxel size (Å).
    weights : numpy.ndarray, optional
        Mask applied to every map.
    memory_budget, workdir
        As for :class:`CorrelationAccumulator`.
    """

    def __init__(self, n, voxel_size, weights=None, memory_budget=DEFAULT_BUDGET, workdir=None):
        self.n, self.voxel_size, self.weights = n, voxel_size, weights
        self.budget, self.workdir = memory_budget, workdir
        self.layout = None
        self.store = None

    def add(self, i, volume):
        """Add map ``i``."""
        if self.layout is None:
            self.layout = ShellLayout(volume.shape[0])
            self.store = VectorStore(self.n, int(self.layout.offsets[-1]), self.budget,
                                     self.workdir)
        self.store.write(i, self.layout.vector(fsc_prepare(volume, self.weights)))

    def result(self):
        """``(frequencies (S,), curves (n, n, S))`` for shells 1 .. box // 2; releases the store."""
        try:
            grams = gram_matrix(self.store, self.budget, segments=self.layout.offsets)
        finally:
            self.close()
        return self.layout.frequencies(self.voxel_size)[1:], curves_from_grams(grams)[..., 1:]

    def close(self):
        """Release the vector store."""
        if self.store is not None:
            self.store.close()
            self.store = None


def fsc_matrix(volumes, voxel_size, weights=None, memory_budget=DEFAULT_BUDGET, workdir=None):
    """FSC curves of every pair of maps, streaming.

    Parameters
    ----------
    volumes : sequence of numpy.ndarray
        Maps on one grid (read once, in order).
    voxel_size : float
        Voxel size (Å).
    weights : numpy.ndarray, optional
        Mask applied to every map.
    memory_budget, workdir
        As for :func:`correlation_matrix`.

    Returns
    -------
    frequencies : numpy.ndarray
        ``(S,)`` shells 1 .. box // 2 in 1/Å.
    curves : numpy.ndarray
        ``(n, n, S)`` FSC of each pair (1 on the diagonal).
    """
    acc = FSCAccumulator(len(volumes), voxel_size, weights, memory_budget, workdir)
    try:
        for i, volume in enumerate(volumes):
            acc.add(i, volume)
        return acc.result()
    finally:
        acc.close()


def curves_from_grams(grams):
    """``(n, n, S)`` FSC curves from per-shell Gram matrices ``(S, n, n)``."""
    power = np.einsum('sii->si', grams)
    den = np.sqrt(np.maximum(power[:, :, None] * power[:, None, :], 1e-300))
    curves = np.transpose(grams / den, (1, 2, 0))
    curves = (curves + np.transpose(curves, (1, 0, 2))) / 2.0
    idx = np.arange(curves.shape[0])
    curves[idx, idx, :] = 1.0
    return curves


def fsc_crossing(curves, frequencies, threshold):
    """Frequency (1/Å) where each FSC curve first falls below ``threshold``.

    Linear interpolation between shells; a curve that never falls below gives the last
    (Nyquist) frequency, one below it from the first shell gives the first shell's frequency.

    Parameters
    ----------
    curves : numpy.ndarray
        ``(..., S)`` FSC curves.
    frequencies : numpy.ndarray
        ``(S,)`` shell frequencies.
    threshold : float

    Returns
    -------
    numpy.ndarray
        ``curves.shape[:-1]`` frequencies.
    """
    below = curves < threshold
    first = np.where(below.any(axis=-1), below.argmax(axis=-1), curves.shape[-1])
    out = np.full(curves.shape[:-1], frequencies[-1], dtype=float)
    inside = (first > 0) & (first < curves.shape[-1])
    out[first == 0] = frequencies[0]
    if inside.any():
        k = first[inside]
        c = curves[inside]
        hi = np.take_along_axis(c, k[:, None], axis=-1)[:, 0]
        lo = np.take_along_axis(c, (k - 1)[:, None], axis=-1)[:, 0]
        t = np.clip((lo - threshold) / np.maximum(lo - hi, 1e-12), 0.0, 1.0)
        out[inside] = frequencies[k - 1] + t * (frequencies[k] - frequencies[k - 1])
    return out


def fsc_similarity(curves, frequencies, mode='resolution', threshold=0.143,
                   max_resolution=None):
    """A similarity in [0, 1] (or [-1, 1] for ``mean``) from FSC curves.

    Parameters
    ----------
    curves : numpy.ndarray
        ``(n, n, S)`` FSC curves.
    frequencies : numpy.ndarray
        ``(S,)`` shell frequencies (1/Å).
    mode : {'resolution', 'mean'}
        ``resolution``: the frequency where the FSC falls below ``threshold``, divided by the
        Nyquist frequency (1 = the maps agree to Nyquist). ``mean``: the mean FSC over the shells
        up to ``max_resolution``.
    threshold : float
        FSC threshold of the ``resolution`` mode (0.143 or 0.5 usually).
    max_resolution : float, optional
        Highest resolution (Å) of the ``mean`` mode; default Nyquist.

    Returns
    -------
    similarity : numpy.ndarray
        ``(n, n)``, 1 on the diagonal.
    resolution : numpy.ndarray
        ``(n, n)`` resolution (Å) at ``threshold`` of each pair.
    """
    crossing = fsc_crossing(curves, frequencies, threshold)
    resolution = 1.0 / crossing
    if mode == 'resolution':
        similarity = crossing / frequencies[-1]
    elif mode == 'mean':
        limit = frequencies[-1] if not max_resolution else 1.0 / max_resolution
        shells = frequencies <= limit + 1e-12
        if not shells.any():
            raise MapClusteringError(f'FSC limit {max_resolution} A is below the first shell '
                                     f'({1.0 / frequencies[0]:.1f} A)')
        similarity = curves[..., shells].mean(axis=-1)
    else:
        raise MapClusteringError(f"FSC mode must be 'resolution' or 'mean', got {mode!r}")
    similarity = (similarity + similarity.T) / 2.0
    np.fill_diagonal(similarity, 1.0)
    return similarity, resolution
