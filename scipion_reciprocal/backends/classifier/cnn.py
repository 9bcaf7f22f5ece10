"""The good/bad particle CNN (Keras 3 on TensorFlow) and the two ways of scanning a micrograph.

The network is built so that scanning a whole micrograph fully convolutionally gives the same
scores as cutting out every window, normalising it and classifying it:

- convolutions and poolings use ``valid`` padding, so a window's features do not depend on
  zero padding at its border and are a block of the features of the whole micrograph when
  the window starts on a multiple of :data:`TOTAL_STRIDE` pixels;
- the first convolution's kernels sum to zero (:class:`ZeroSumConv2D`), so the network ignores
  a window's mean, and no layer before the dense head has a bias, so the features scale
  linearly with the window's intensity: dividing the micrograph's features by each window's
  standard deviation (measured on the micrograph at the window grid) equals normalising the
  window first;
- the dense head on the flattened features becomes a convolution with the dense kernel.

The last layer gives a logit; the score is its sigmoid, the probability of "good".
"""

import math
import time

import keras
import numpy as np
import tensorflow as tf
from keras import layers

import imaging

#: Product of the pooling strides: the window grid step of one fully convolutional pass.
TOTAL_STRIDE = 8
#: Largest tile side (pixels) a fully convolutional pass works on, to bound memory.
MAX_TILE = 1280
FILTERS = (16, 32, 64)
DENSE_UNITS = 128


@keras.saving.register_keras_serializable(package='scipion_reciprocal')
class ZeroSumConv2D(layers.Conv2D):
    """2D convolution whose kernels sum to zero over space and input channels.

    The stored kernel is free; its mean is removed at every call, so the layer's response
    to a constant image is zero whatever the weights.
    """

    def convolution_op(self, inputs, kernel):
        kernel = kernel - keras.ops.mean(kernel, axis=(0, 1, 2), keepdims=True)
        return super().convolution_op(inputs, kernel)


def build_model(box, learning_rate=1e-3, decay_steps=None):
    """Compiled classifier for ``(box, box, 1)`` images returning one logit per image.

    Three stages of 3x3 ``valid`` convolution (16, 32, 64 filters, ReLU, no bias) and 2x2
    max pooling, flattened into a dense ReLU layer of 128 units with dropout 0.3 and a
    one-unit logit. Trained with Adam on binary cross-entropy from logits; with
    ``decay_steps`` the learning rate follows a cosine from ``learning_rate`` down to 5 % of it
    at that step (the end of the planned epochs), which steadies the last epochs.
    """
    if box < imaging.MIN_BOX or box % 2:
        raise ValueError(f'the working box must be even and at least {imaging.MIN_BOX} pixels, '
                         f'got {box}')
    inputs = keras.Input((box, box, 1), name='image')
    x = ZeroSumConv2D(FILTERS[0], 3, use_bias=False, activation='relu', name='conv1')(inputs)
    x = layers.MaxPooling2D(2, name='pool1')(x)
    for n, filters in enumerate(FILTERS[1:], start=2):
        x = layers.Conv2D(filters, 3, use_bias=False, activation='relu', name=f'conv{n}')(x)
        x = layers.MaxPooling2D(2, name=f'pool{n}')(x)
    x = layers.Flatten(name='flatten')(x)
    x = layers.Dense(DENSE_UNITS, activation='relu', name='dense')(x)
    x = layers.Dropout(0.3, name='dropout')(x)
    logit = layers.Dense(1, name='logit')(x)
    model = keras.Model(inputs, logit, name='particle_classifier')
    if decay_steps:
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps,
                                                               alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True),
                  metrics=[keras.metrics.BinaryAccuracy(name='acc', threshold=0.0)])
    return model


def load_model(path):
    """Load a saved ``model.keras`` (the custom layer is registered by importing this module)."""
    return keras.models.load_model(path, compile=False)


def versions():
    """Framework versions recorded in ``model.json``."""
    return {'tensorflow': tf.__version__, 'keras': keras.__version__, 'numpy': np.__version__}


def devices():
    """Names of the devices TensorFlow sees, e.g. ``["CPU:0", "GPU:0"]``."""
    return [f'{d.device_type}:{d.name.rsplit(":", 1)[-1]}'
            for d in tf.config.list_physical_devices()]


class ImageBatches(keras.utils.PyDataset):
    """Batches ``(images, labels[, weights])`` drawn from a :class:`ParticleImages` source.

    Parameters
    ----------
    source : classifier_io.ParticleImages
        Where images come from (already on the working grid and normalised).
    rows : numpy.ndarray
        Rows of the source in this set.
    labels : numpy.ndarray
        0/1 label of each row of the source.
    batch_size : int
        Images per batch.
    rng : numpy.random.Generator or None
        Shuffles the rows every epoch and draws augmentations; None for a fixed order.
    augment : bool
        Apply a random square symmetry (:func:`imaging.augment_dihedral`) and a random shift
        of up to ``max_shift`` pixels (:func:`imaging.random_shifts`) to each image.
    max_shift : int
        Largest shift of the augmentation, pixels per axis.
    class_weight : dict or None
        Label -> sample weight, returned as a third element.
    """

    def __init__(self, source, rows, labels, batch_size, rng=None, augment=False,
                 class_weight=None, max_shift=0):
        super().__init__()
        self.max_shift = max_shift
        self.source, self.labels = source, labels
        self.rows = np.array(rows)
        self.batch_size, self.rng, self.augment = batch_size, rng, augment
        self.class_weight = class_weight
        self.on_epoch_end()

    def __len__(self):
        return math.ceil(len(self.rows) / self.batch_size)

    def __getitem__(self, idx):
        rows = self.rows[idx * self.batch_size:(idx + 1) * self.batch_size]
        images = self.source.load(rows)
        if self.augment:
            images = imaging.augment_dihedral(images, self.rng)
            images = imaging.random_shifts(images, self.rng, self.max_shift)
        labels = self.labels[rows].astype(np.float32)[:, None]
        if self.class_weight is None:
            return images[..., None], labels
        weights = np.array([self.class_weight[int(v)] for v in self.labels[rows]], np.float32)
        return images[..., None], labels, weights

    def on_epoch_end(self):
        if self.rng is not None:
            self.rng.shuffle(self.rows)


class EpochLog(keras.callbacks.Callback):
    """Print one line per epoch, stop early on the validation loss, keep the chosen weights.

    Parameters
    ----------
    epochs : int
        Planned number of epochs (for the log line).
    patience : int
        Stop after this many epochs without a lower validation loss (0: never stop early).
    log : callable
        Receives each log line.
    keep : str
        ``best``: end with the weights of the epoch of lowest validation loss; ``last``: with
        those of the last epoch run.
    """

    def __init__(self, epochs, patience, log, keep='best'):
        super().__init__()
        self.epochs, self.patience, self.log, self.keep = epochs, patience, log, keep
        self.history, self.best_loss, self.best_epoch = [], math.inf, 0
        self.best_weights, self._start = None, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        row = {'epoch': epoch + 1, 'loss': float(logs['loss']), 'acc': float(logs['acc']),
               'val_loss': float(logs['val_loss']), 'val_acc': float(logs['val_acc']),
               'seconds': seconds}
        self.history.append(row)
        self.log(f'epoch {epoch + 1}/{self.epochs}  loss {row["loss"]:.4f}  acc {row["acc"]:.4f}  '
                 f'val_loss {row["val_loss"]:.4f}  val_acc {row["val_acc"]:.4f}  '
                 f'{seconds:.1f} s')
        if row['val_loss'] < self.best_loss:
            self.best_loss, self.best_epoch = row['val_loss'], epoch + 1
            if self.keep == 'best':
                self.best_weights = self.model.get_weights()
        elif self.patience and epoch + 1 - self.best_epoch >= self.patience:
            self.log(f'early stop: no lower validation loss for {self.patience} epochs')
            self.model.stop_training = True

    @property
    def kept_epoch(self):
        """The epoch whose weights the model ends with."""
        return self.best_epoch if self.keep == 'best' else len(self.history)

    def on_train_end(self, logs=None):
        if self.keep == 'best' and self.best_weights is not None:
            self.model.set_weights(self.best_weights)
        self.log(f'keeping the weights of epoch {self.kept_epoch} ({self.keep})')


class Scorer:
    """Inference with a trained classifier: particle images and whole micrographs.

    Parameters
    ----------
    model : keras.Model
        As built by :func:`build_model` (trained or not).
    normalize : str
        The normalisation the model was trained with (:data:`imaging.NORMALIZE_MODES`).
    """

    def __init__(self, model, normalize):
        self.model, self.normalize = model, normalize
        self.box = int(model.input_shape[1])
        names = [layer.name for layer in model.layers]
        self.features = model.layers[1:names.index('flatten')]
        dense, last = model.get_layer('dense'), model.get_layer('logit')
        feature_shape = model.get_layer('flatten').input.shape[1:]
        kernel, bias = dense.get_weights()
        self.head_kernel = tf.constant(kernel.reshape(tuple(feature_shape) + (-1,)))
        self.head_bias = tf.constant(bias)
        logit_kernel, logit_bias = last.get_weights()
        self.logit_kernel = tf.constant(logit_kernel[:, 0])
        self.logit_bias = tf.constant(logit_bias[0])
        weights = imaging.normalization_weights(self.box, normalize)
        self.stat_kernel = (None if weights is None else
                            tf.constant((weights / weights.sum())[:, :, None, None]))
        spec = tf.TensorSpec([None, self.box, self.box, 1], tf.float32)
        self._logits = tf.function(lambda x: self.model(x, training=False)[:, 0],
                                   input_signature=[spec])
        self._fcn = tf.function(self._fcn_pass, input_signature=[
            tf.TensorSpec([1, None, None, 1], tf.float32), tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.int32)])

    def logits(self, images, batch_size=256):
        """Logits of normalised ``(n, box, box)`` images, computed in batches."""
        out = np.empty(len(images), dtype=np.float32)
        for start in range(0, len(images), batch_size):
            batch = np.asarray(images[start:start + batch_size], dtype=np.float32)[..., None]
            out[start:start + len(batch)] = self._logits(tf.constant(batch)).numpy()
        return out

    def scan_windows(self, image, stride, batch_size=512):
        """Score map by cutting out every window (a view), normalising and classifying it.

        Returns
        -------
        numpy.ndarray
            ``(ny, nx)`` logits of the windows of :func:`imaging.sliding_windows`.
        """
        view = imaging.sliding_windows(image, self.box, stride)
        ny, nx = view.shape[:2]
        out = np.empty((ny, nx), dtype=np.float32)
        rows = max(1, batch_size // nx)
        for y0 in range(0, ny, rows):
            batch = view[y0:y0 + rows].reshape(-1, self.box, self.box)
            batch = imaging.normalize(batch, self.normalize)
            out[y0:y0 + rows] = self.logits(batch, len(batch)).reshape(-1, nx)
        return out

    def scan(self, image, stride):
        """Score map of the same windows as :meth:`scan_windows`, computed fully convolutionally.

        One pass gives the windows starting on multiples of :data:`TOTAL_STRIDE`; other strides
        combine passes on the image shifted by multiples of ``gcd(stride, TOTAL_STRIDE)``.

        Returns
        -------
        numpy.ndarray
            ``(ny, nx)`` logits, equal to :meth:`scan_windows` up to float32 rounding.
        """
        ny, nx = imaging.window_grid(image.shape, self.box, stride)
        out = np.empty((ny, nx), dtype=np.float32)
        starts_y, starts_x = np.arange(ny) * stride, np.arange(nx) * stride
        for ry in np.unique(starts_y % TOTAL_STRIDE):
            jy = np.flatnonzero(starts_y % TOTAL_STRIDE == ry)
            for rx in np.unique(starts_x % TOTAL_STRIDE):
                jx = np.flatnonzero(starts_x % TOTAL_STRIDE == rx)
                grid = self._grid8(image[ry:, rx:])
                out[np.ix_(jy, jx)] = grid[np.ix_(starts_y[jy] // TOTAL_STRIDE,
                                                  starts_x[jx] // TOTAL_STRIDE)]
        return out

    def _grid8(self, image):
        """Logits of all windows starting on multiples of 8 pixels, by tiles of the image."""
        gy, gx = imaging.window_grid(image.shape, self.box, TOTAL_STRIDE)
        out = np.empty((gy, gx), dtype=np.float32)
        per_tile = max(1, (MAX_TILE - self.box) // TOTAL_STRIDE + 1)
        for a0 in range(0, gy, per_tile):
            a1 = min(gy, a0 + per_tile)
            for b0 in range(0, gx, per_tile):
                b1 = min(gx, b0 + per_tile)
                tile = image[a0 * TOTAL_STRIDE:(a1 - 1) * TOTAL_STRIDE + self.box,
                             b0 * TOTAL_STRIDE:(b1 - 1) * TOTAL_STRIDE + self.box]
                tile = tf.constant(np.ascontiguousarray(tile, dtype=np.float32)[None, :, :, None])
                out[a0:a1, b0:b1] = self._fcn(tile, a1 - a0, b1 - b0).numpy()
        return out

    def _fcn_pass(self, image, ny, nx):
        x = image
        for layer in self.features:
            x = layer(x)
        hidden = tf.nn.conv2d(x, self.head_kernel, 1, 'VALID')[0, :ny, :nx]
        if self.stat_kernel is not None:
            mean = tf.nn.conv2d(image, self.stat_kernel, TOTAL_STRIDE, 'VALID')[0, :ny, :nx]
            square = tf.nn.conv2d(image * image, self.stat_kernel, TOTAL_STRIDE,
                                  'VALID')[0, :ny, :nx]
            var = square - mean * mean
            inv = tf.where(var > 1e-10, tf.math.rsqrt(tf.maximum(var, 1e-10)), 0.0)
            hidden = hidden * inv
        hidden = tf.nn.relu(hidden + self.head_bias)
        return tf.tensordot(hidden, self.logit_kernel, 1) + self.logit_bias
