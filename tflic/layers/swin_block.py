"""Swin transformer block: (shifted) window attention and an MLP, pre-norm residuals.

Written with ops LiteRT has as builtins, so that the transforms convert as they are
(export/tflite.py): the cyclic shift is two slices and a concat per axis (`tf.roll` is a
flex op), and new axes come from expand_dims and reshape (new-axis indexing is a
StridedSlice the converter leaves to flex). Both only move values: the floats are those
of tf.roll and indexing.
"""

import tensorflow as tf

from tflic.layers.initializers import mlp
from tflic.layers.layer_norm import LayerNorm
from tflic.layers.window_attention import WindowAttention

# Additive attention logit for pairs that must not attend; exp() of it is exactly 0 in
# float32 and it still fits float16.
_MASKED = -1e4


def _window_partition(x, window_size):
  """[B, H, W, C] (H, W multiples of window_size) -> [B * nW, window_size**2, C]."""
  shape = tf.shape(x)
  c = x.shape[-1] if x.shape[-1] is not None else shape[3]
  x = tf.reshape(x, [shape[0], shape[1] // window_size, window_size,
                     shape[2] // window_size, window_size, c])
  return tf.reshape(tf.transpose(x, [0, 1, 3, 2, 4, 5]), [-1, window_size**2, c])


def _window_merge(windows, batch, height, width, window_size):
  """Inverse of `_window_partition`."""
  c = windows.shape[-1]
  x = tf.reshape(windows, [batch, height // window_size, width // window_size,
                           window_size, window_size, c])
  return tf.reshape(tf.transpose(x, [0, 1, 3, 2, 4, 5]), [batch, height, width, c])


def _roll(x, shift, axes):
  """tf.roll(x, shift, axes) for |shift| below every size along `axes`: a slice and a
  concat per axis."""
  for axis in axes:
    lead = (slice(None),) * axis
    x = tf.concat([x[lead + (slice(-shift, None),)], x[lead + (slice(None, -shift),)]], axis)
  return x


def attention_mask(height, width, padded_height, padded_width, window_size, shift):
  """Additive mask [nW, N, N] for the windows of a padded, cyclically shifted map.

  Tokens attend to each other only if they are both real (not padding) and were
  neighbours before the cyclic shift, so results never depend on the padding amount.
  """
  rows = tf.range(padded_height)
  cols = tf.range(padded_width)
  valid = tf.logical_and(tf.expand_dims(rows, 1) < height, tf.expand_dims(cols, 0) < width)
  if shift:
    # Regions of the shifted map that came from different sides of the image.
    def regions(index, size):
      return tf.where(index < size - window_size, 0,
                      tf.where(index < size - shift, 1, 2))
    ids = (tf.expand_dims(regions(rows, padded_height), 1) * 3 +
           tf.expand_dims(regions(cols, padded_width), 0))
    valid = _roll(valid, -shift, (0, 1))
  else:
    ids = tf.zeros([padded_height, padded_width], tf.int32)
  ids = tf.where(valid, ids, -1)
  ids = _window_partition(tf.reshape(ids, [1, padded_height, padded_width, 1]), window_size)
  ids = tf.reshape(ids, [-1, window_size**2])  # [nW, N]
  return tf.where(tf.equal(tf.expand_dims(ids, 2), tf.expand_dims(ids, 1)), 0.0, _MASKED)


@tf.keras.utils.register_keras_serializable(package="tflic")
class SwinBlock(tf.keras.layers.Layer):
  """One Swin transformer block on a [B, H, W, dim] feature map, any H and W.

  The map is padded to a multiple of the window size; padded tokens are masked out of
  the attention and cropped away, so the output does not depend on the padding.
  """

  def __init__(self, dim, num_heads, window_size, shift=False, mlp_ratio=4.0, **kwargs):
    super().__init__(**kwargs)
    self.dim = dim
    self.num_heads = num_heads
    self.window_size = window_size
    self.shift = bool(shift)
    self.mlp_ratio = mlp_ratio
    self.norm1 = LayerNorm(epsilon=1e-5, name="norm1")
    self.attn = WindowAttention(dim, num_heads, window_size, name="attn")
    self.norm2 = LayerNorm(epsilon=1e-5, name="norm2")
    self.mlp = mlp(dim, mlp_ratio)

  def call(self, x):
    ws = self.window_size
    shape = tf.shape(x)
    batch, height, width = shape[0], shape[1], shape[2]
    padded_height = (height + ws - 1) // ws * ws
    padded_width = (width + ws - 1) // ws * ws
    shift = ws // 2 if self.shift else 0

    # A map known (statically) to fill whole windows needs no padding, and unshifted no
    # mask either: its mask would be all zeros (training crops; traced shapes).
    whole_windows = all(size is not None and size % ws == 0 for size in x.shape[1:3])
    h = self.norm1(x)
    if not whole_windows:
      h = tf.pad(h, [[0, 0], [0, padded_height - height], [0, padded_width - width], [0, 0]])
    if shift:
      h = _roll(h, -shift, (1, 2))
    mask = (None if whole_windows and not shift else
            attention_mask(height, width, padded_height, padded_width, ws, shift))
    h = self.attn(_window_partition(h, ws), mask=mask)
    h = _window_merge(h, batch, padded_height, padded_width, ws)
    if shift:
      h = _roll(h, shift, (1, 2))
    x = x + (h if whole_windows else h[:, :height, :width])
    return x + self.mlp(self.norm2(x))

  def make_identity(self):
    """Zeroes both residual branches' outputs, so the block passes its input through.

    Grows a trained model by a block without changing what it computes.
    """
    for dense in (self.attn.proj, self.mlp.layers[-1]):
      for variable in dense.weights:
        variable.assign(tf.zeros_like(variable))

  def get_config(self):
    config = super().get_config()
    config.update(dim=self.dim, num_heads=self.num_heads, window_size=self.window_size,
                  shift=self.shift, mlp_ratio=self.mlp_ratio)
    return config
