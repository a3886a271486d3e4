"""Pre-norm transformer block in which query tokens attend to masked context tokens."""

import tensorflow as tf

from tflic.model.layers import fused_ops
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

  def call(self, queries, context, mask, training=None):
    if training and fused_ops.enabled(queries.dtype):
      out = self._fused_attention(queries, context, mask)
    else:
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

  def _fused_attention(self, queries, context, mask):
    """The attention on CPUs in training: the leading axes flattened, q, k and v split
    into heads with their biases (and the queries' scale, folded into the query kernel)
    by one fused kernel each, and batched products in place of the einsums, whose
    gradients took ~5% of a medium step. Returns [M, q, heads, head_dim]."""
    head_dim = self.dim // self.num_heads
    flat = lambda x: tf.reshape(x, tf.concat([[-1], tf.shape(x)[-2:]], 0))  # pylint: disable=unnecessary-lambda-assignment
    q, = fused_ops.split_heads(
        *fused_ops.dense_parts(self.query, flat(self.norm_query(queries)),
                               tf.fill([self.dim], head_dim**-0.5)), self.num_heads, parts=1)
    k, v = fused_ops.split_heads(
        *fused_ops.dense_parts(self.key_value, flat(self.norm_context(context))),
        self.num_heads, parts=2)
    logits = tf.matmul(q, k, transpose_b=True)  # [M, heads, q, t]
    shape = tf.shape(queries)
    mask = tf.broadcast_to(mask, tf.concat([shape[:-1], tf.shape(context)[-2:-1]], 0))
    logits = tf.where(flat(mask)[:, None], logits, tf.constant(-1e9, logits.dtype))
    out = tf.matmul(tf.nn.softmax(logits, axis=-1), v)  # [M, heads, q, head_dim]
    return tf.transpose(out, [0, 2, 1, 3])

  def get_config(self):
    config = super().get_config()
    config.update(dim=self.dim, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio)
    return config
