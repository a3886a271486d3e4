"""Swin transformer block: (shifted) window attention and an MLP, pre-norm residuals.

The windows, the cyclic shift and the mask come from `tflic.model.windows` on the TensorFlow
backend (`tflic.model.backends`), which the integer reference shares, in ops LiteRT has as
builtins.
"""

import tensorflow as tf

from tflic.model.backends import TENSORFLOW as _TF
from tflic.model.layers.initializers import mlp
from tflic.model.layers.layer_norm import LayerNorm
from tflic.model.layers.window_attention import WindowAttention
from tflic.model import windows

# Additive attention logit for pairs that must not attend; exp() of it is exactly 0 in
# float32 and it still fits float16.
_MASKED = -1e4


def attention_mask(height, width, padded_height, padded_width, window_size, shift):
  """Additive mask [nW, N, N] for the windows of a padded, cyclically shifted map: 0
  where two tokens may attend (`tflic.model.windows.same_region`), a large negative logit
  elsewhere."""
  region = windows.same_region(_TF, height, width, padded_height, padded_width, window_size,
                               shift)
  return tf.where(region, 0.0, _MASKED)


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

  def call(self, x, training=None):
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
    # In training, tf.roll: the same values, and its gradient is one roll back, where the
    # slices' (StridedSliceGrad) write zero-padded full-size copies and add them up.
    # Exports keep the slices and concat (LiteRT builtins; tf.roll is a flex op there).
    roll = tf.roll if training else _TF.roll
    if shift:
      h = roll(h, [-shift, -shift], [1, 2])
    mask = (None if whole_windows and not shift else
            attention_mask(height, width, padded_height, padded_width, ws, shift))
    h = self.attn(windows.partition(_TF, h, ws), mask=mask)
    h = windows.merge(_TF, h, batch, padded_height, padded_width, ws)
    if shift:
      h = roll(h, [shift, shift], [1, 2])
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
