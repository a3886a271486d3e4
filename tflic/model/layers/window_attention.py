"""Multi-head self-attention within windows, with a relative position bias (Swin)."""

import numpy as np
import tensorflow as tf

from tflic.model.layers import fused_ops
from tflic.model.layers.initializers import small_normal


def relative_position_index(window_size):
  """Index into the bias table for every (query, key) pair of a window.

  Returns an int32 array [N, N], N = window_size**2, with values in
  [0, (2 * window_size - 1)**2).
  """
  coords = np.stack(np.meshgrid(np.arange(window_size), np.arange(window_size),
                                indexing="ij")).reshape(2, -1)
  relative = coords[:, :, None] - coords[:, None, :] + window_size - 1
  return (relative[0] * (2 * window_size - 1) + relative[1]).astype(np.int32)


@tf.keras.utils.register_keras_serializable(package="tflic")
class WindowAttention(tf.keras.layers.Layer):
  """Self-attention over the tokens of each window (Liu et al., Swin, 2021).

  Call with `windows` [num_windows * batch, N, dim] (N = window_size**2, the windows of
  one image contiguous per image) and an additive `mask` [num_windows, N, N] or None.
  """

  def __init__(self, dim, num_heads, window_size, qkv_bias=True, **kwargs):
    super().__init__(**kwargs)
    if dim % num_heads:
      raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
    self.dim = dim
    self.num_heads = num_heads
    self.window_size = window_size
    self.qkv_bias = qkv_bias
    self.qkv = tf.keras.layers.Dense(3 * dim, use_bias=qkv_bias, name="qkv",
        kernel_initializer=small_normal())
    self.proj = tf.keras.layers.Dense(dim, name="proj", kernel_initializer=small_normal())
    self._index = relative_position_index(window_size).reshape(-1)

  def build(self, input_shape):
    self.relative_position_bias_table = self.add_weight(
        name="relative_position_bias_table",
        shape=((2 * self.window_size - 1)**2, self.num_heads),
        initializer=tf.keras.initializers.TruncatedNormal(stddev=0.02))
    super().build(input_shape)

  def call(self, windows, mask=None, training=None):
    n = self.window_size**2
    head_dim = self.dim // self.num_heads
    if training:
      q, k, v = self._scaled_qkv(windows, head_dim**-0.5)
    else:
      q, k, v = self._split_heads(self.qkv(windows))
    logits = tf.matmul(q if training else q * head_dim**-0.5, k, transpose_b=True)
    bias = tf.gather(self.relative_position_bias_table, self._index)
    bias = tf.transpose(tf.reshape(bias, [n, n, self.num_heads]), [2, 0, 1])
    if training and fused_ops.enabled(logits.dtype):
      # One pass each way instead of two adds, the softmax and their gradients' chain of
      # full-size products, sums and the bias's reduction (~9% of a medium step on CPUs).
      weights = fused_ops.window_softmax(logits, bias, mask)
    else:
      logits += bias
      if mask is not None:
        num_windows = tf.shape(mask)[0]
        logits = tf.reshape(logits, [-1, num_windows, self.num_heads, n, n])
        logits += tf.cast(mask, logits.dtype)[None, :, None]
        logits = tf.reshape(logits, [-1, self.num_heads, n, n])
      weights = tf.nn.softmax(logits, axis=-1)
    out = tf.matmul(weights, v)
    out = tf.reshape(tf.transpose(out, [0, 2, 1, 3]), [-1, n, self.dim])
    return self.proj(out)

  def _split_heads(self, qkv):
    """q, k, v [B', heads, N, head_dim] of qkv [B', N, 3 dim]."""
    qkv = tf.reshape(qkv, [-1, self.window_size**2, 3, self.num_heads,
                           self.dim // self.num_heads])
    return tf.unstack(tf.transpose(qkv, [2, 0, 3, 1, 4]))

  def _scaled_qkv(self, windows, scale):
    """q, k, v by qkv's Dense with the query columns of its kernel and bias scaled by
    `scale`: the queries' scaling on [dim, 3 dim] weights instead of on every query (in
    training, a bfloat16 product over all queries and its gradient cost more than this).
    On CPUs one fused kernel adds the bias and splits the heads (TensorFlow's bias add,
    transpose and unstack, and their gradients, took ~10% of a medium step)."""
    scales = tf.concat([tf.fill([self.dim], scale), tf.ones([2 * self.dim])], 0)
    product, bias = fused_ops.dense_parts(self.qkv, windows, scales)
    if fused_ops.enabled(product.dtype):
      return fused_ops.split_heads(product, bias, self.num_heads)
    return self._split_heads(tf.nn.bias_add(product, tf.cast(bias, product.dtype)))

  def get_config(self):
    config = super().get_config()
    config.update(dim=self.dim, num_heads=self.num_heads, window_size=self.window_size,
                  qkv_bias=self.qkv_bias)
    return config
