"""Pre-norm transformer block in which query tokens attend to masked context tokens."""

import tensorflow as tf

from tflic.model.layers.initializers import mlp
from tflic.model.layers.initializers import small_normal
from tflic.model.layers.layer_norm import LayerNorm


@tf.keras.utils.register_keras_serializable(package="tflic")
class CrossAttentionBlock(tf.keras.layers.Layer):
  """queries [..., q, dim] attend to context [..., t, dim] under a boolean mask [..., q, t].

  Leading axes are batch-like and must agree (broadcasting is allowed for the mask).
  Masked logits are replaced, not offset, so masked context values never leak into the
  output as long as they are finite; every query must see at least one token.
  """

  def __init__(self, dim, num_heads, mlp_ratio=2.0, **kwargs):
    super().__init__(**kwargs)
    if dim % num_heads:
      raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
    self.dim = dim
    self.num_heads = num_heads
    self.mlp_ratio = mlp_ratio
    self.norm_query = LayerNorm(epsilon=1e-5, name="norm_query")
    self.norm_context = LayerNorm(epsilon=1e-5, name="norm_context")
    self.query = tf.keras.layers.Dense(dim, name="query", kernel_initializer=small_normal())
    self.key_value = tf.keras.layers.Dense(2 * dim, name="key_value",
        kernel_initializer=small_normal())
    self.proj = tf.keras.layers.Dense(dim, name="proj", kernel_initializer=small_normal())
    self.norm_mlp = LayerNorm(epsilon=1e-5, name="norm_mlp")
    self.mlp = mlp(dim, mlp_ratio)

  def _split_heads(self, x):
    shape = tf.concat([tf.shape(x)[:-1], [self.num_heads, self.dim // self.num_heads]], 0)
    return tf.reshape(x, shape)

  def call(self, queries, context, mask):
    head_dim = self.dim // self.num_heads
    q = self._split_heads(self.query(self.norm_query(queries))) * head_dim**-0.5
    k, v = tf.split(self.key_value(self.norm_context(context)), 2, axis=-1)
    k, v = self._split_heads(k), self._split_heads(v)
    logits = tf.einsum("...qhd,...thd->...hqt", q, k)
    mask = tf.expand_dims(mask, -3)  # broadcast over heads
    logits = tf.where(mask, logits, tf.constant(-1e9, logits.dtype))
    out = tf.einsum("...hqt,...thd->...qhd", tf.nn.softmax(logits, axis=-1), v)
    out = tf.reshape(out, tf.shape(queries))
    queries += self.proj(out)
    return queries + self.mlp(self.norm_mlp(queries))

  def get_config(self):
    config = super().get_config()
    config.update(dim=self.dim, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio)
    return config
