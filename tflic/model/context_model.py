"""The spatial-channel context transformer: Gaussian parameters for every latent chunk.

y (the latent, [B, h, w, M]) is cut into K groups of M / K channels; a chunk is one group
at one position. For a target chunk, the queries carry the hyperprior features at its
position and a group embedding; the keys are the chunks of the w x w window around it
that precede it in coding order (see `coding_order.context_mask`), plus the hyperprior
token, which is always visible. The same `predict` serves the parallel, teacher-forced
training pass (all chunks at once) and the coder (the chunks of one step).
"""

import tensorflow as tf

from tflic.model import coding_order
from tflic.model.layers.cross_attention_block import CrossAttentionBlock
from tflic.model.layers.layer_norm import LayerNorm


@tf.keras.utils.register_keras_serializable(package="tflic")
class ContextTransformer(tf.keras.layers.Layer):
  """Predicts (mean, log_scale) of latent chunks from coded neighbours and hyperprior.

  Args:
    num_groups: K, channel groups of the latent.
    group_channels: channels per group (M / K).
    window: odd side w of the spatial context window.
    dim, depth, num_heads, mlp_ratio: size of the transformer.
    mode: `wavefront` or `serial`; fixes the context mask, so it is part of the model.
  """

  def __init__(self, num_groups, group_channels, window, dim, depth, num_heads,
               mlp_ratio=2.0, mode=coding_order.WAVEFRONT, **kwargs):
    super().__init__(**kwargs)
    if window % 2 != 1:
      raise ValueError(f"context window must be odd, got {window}")
    self.num_groups = num_groups
    self.group_channels = group_channels
    self.window = window
    self.dim = dim
    self.depth = depth
    self.num_heads = num_heads
    self.mlp_ratio = mlp_ratio
    self.mode = coding_order.check_mode(mode)
    # Only the slots a chunk can ever see: the others' attention weight is exactly 0.
    self.slots = coding_order.candidate_slots(window, self.mode)
    self.chunk_embed = tf.keras.layers.Dense(dim, name="chunk_embed")
    self.hyper_embed = tf.keras.layers.Dense(dim, name="hyper_embed")
    self.blocks = [CrossAttentionBlock(dim, num_heads, mlp_ratio, name=f"block_{i}")
                   for i in range(depth)]
    self.head_norm = LayerNorm(epsilon=1e-5, name="head_norm")

  def build(self, input_shape):
    init = lambda: tf.keras.initializers.TruncatedNormal(stddev=0.02)  # pylint: disable=unnecessary-lambda-assignment
    k, w2 = self.num_groups, self.window**2
    self.group_embedding = self.add_weight("group_embedding", [k, self.dim], initializer=init())
    self.slot_embedding = self.add_weight("slot_embedding", [w2, self.dim], initializer=init())
    self.query_embedding = self.add_weight("query_embedding", [k, self.dim],
                                           initializer=init())
    # One output head per group: a group's statistics differ from the others'.
    # The head computes in float32 under any precision: means and scales feed the rates.
    self.head_kernel = self.add_weight(
        "head_kernel", [k, self.dim, 2 * self.group_channels],
        initializer=tf.keras.initializers.GlorotUniform(), experimental_autocast=False)
    self.head_bias = self.add_weight(
        "head_bias", [k, 2 * self.group_channels], initializer="zeros",
        experimental_autocast=False)
    super().build(input_shape)

  def _gather(self, grid, positions, offsets):
    """grid [B, h, w, C] at positions [n, 2] + offsets [s, 2] -> [B, n, s, C], zeros outside."""
    r = self.window // 2
    padded = tf.pad(grid, [[0, 0], [r, r], [r, r], [0, 0]])
    indices = positions[:, None, :] + offsets[None, :, :] + r
    values = tf.gather_nd(tf.transpose(padded, [1, 2, 0, 3]), indices)  # [n, s, B, C]
    return tf.transpose(values, [2, 0, 1, 3])

  def predict(self, y_hat, hyper, positions, groups):
    """Gaussian parameters of the chunks (positions x groups).

    Args:
      y_hat: [B, h, w, M], the coded latent; chunks the targets may not see are never
        read into the output (they must be finite).
      hyper: [B, h, w, C], hyperprior features.
      positions: int32 [n, 2], target positions.
      groups: int32 [q], target groups.

    Returns:
      (mean, log_scale), each [B, n, q, M / K].
    """
    # Cast here, not by Keras: the coder calls this method outside __call__.
    dtype = self.compute_dtype
    y_hat, hyper = tf.cast(y_hat, dtype), tf.cast(hyper, dtype)
    shape = tf.shape(y_hat)
    height, width = shape[1], shape[2]
    k, c = self.num_groups, self.group_channels
    offsets = tf.gather(coding_order.window_offsets(self.window), self.slots)
    chunks = self._gather(y_hat, positions, offsets)  # [B, n, s, M]
    chunks = tf.reshape(chunks, tf.concat([tf.shape(chunks)[:3], [k, c]], 0))
    tokens = (self.chunk_embed(chunks) + tf.cast(self.group_embedding, dtype) +
              tf.cast(tf.gather(self.slot_embedding, self.slots), dtype)[:, None, :])
    tokens = tf.reshape(tokens, tf.concat([tf.shape(tokens)[:2], [-1, self.dim]], 0))
    hyper_tokens = self.hyper_embed(
        self._gather(hyper, positions, tf.zeros([1, 2], tf.int32)))  # [B, n, 1, dim]
    context = tf.concat([tokens, hyper_tokens], axis=2)  # [B, n, s*K + 1, dim]

    mask = coding_order.context_mask(height, width, k, self.window, self.mode,
                                     positions, groups, self.slots)
    mask = tf.concat([mask, tf.ones_like(mask[:, :, :1])], axis=-1)  # hyper always visible
    queries = hyper_tokens + tf.cast(tf.gather(self.query_embedding, groups), dtype)
    for block in self.blocks:
      queries = block(queries, context, mask)  # [B, n, q, dim]
    out = tf.einsum("bnqd,qdc->bnqc", tf.cast(self.head_norm(queries), tf.float32),
                    tf.gather(self.head_kernel, groups))
    out += tf.gather(self.head_bias, groups)
    mean, log_scale = tf.split(out, 2, axis=-1)
    return mean, log_scale

  def call(self, y_hat, hyper):
    """Teacher-forced pass over all chunks: (mean, log_scale), each [B, h, w, M]."""
    shape = tf.shape(y_hat)
    height, width = shape[1], shape[2]
    positions = tf.reshape(tf.stack(tf.meshgrid(tf.range(height), tf.range(width),
                                                indexing="ij"), -1), [-1, 2])
    mean, log_scale = self.predict(y_hat, hyper, positions, tf.range(self.num_groups))
    new_shape = tf.stack([shape[0], height, width, self.num_groups * self.group_channels])
    return tf.reshape(mean, new_shape), tf.reshape(log_scale, new_shape)

  def get_config(self):
    config = super().get_config()
    config.update(num_groups=self.num_groups, group_channels=self.group_channels,
                  window=self.window, dim=self.dim, depth=self.depth,
                  num_heads=self.num_heads, mlp_ratio=self.mlp_ratio, mode=self.mode)
    return config


def coding_loop(predict, latent_shape, num_groups, mode, step_fn, state, dtype=tf.float32):
  """Runs a context model chunk step by chunk step in coding order, as the codec does.

  Args:
    predict: `(y_hat [B, h, w, M], positions [n, 2], groups [q]) -> (mean, log_scale)`,
      each [B, n, q, M / K]: the context model's predictions from the latent coded so far.
    latent_shape: the shape [B, h, w, M] of y (M a Python int: the context model needs
      static channels).
    num_groups: K.
    mode: the coding order (`coding_order.MODES`).
    step_fn: `(state, positions, group, mean, log_scale) -> (state, y_hat_chunks)`, with
      mean / log_scale / y_hat_chunks of shape [B, n, M / K]: codes the chunks of one
      step (or just quantizes them) and returns their values in y_hat.
    state: a nest of tensors threaded through `step_fn` (e.g. a range coder handle).
    dtype: of y_hat.

  Returns:
    (y_hat [B, h, w, M], final state).
  """
  batch, height, width = latent_shape[0], latent_shape[1], latent_shape[2]
  k = num_groups
  c = latent_shape[3] // k
  steps = coding_order.num_steps(height, width, k, mode)
  # The coded latent is kept as [h, w, K, B, c] so that one step's chunks are one scatter.
  buffer = tf.zeros(tf.stack([height, width, k, batch, c]), dtype)

  def to_latent(buffer):
    return tf.reshape(tf.transpose(buffer, [3, 0, 1, 2, 4]), [batch, height, width, k * c])

  def body(step, buffer, state):
    positions, group = coding_order.step_chunks(step, height, width, k, mode)
    mean, log_scale = predict(to_latent(buffer), positions, group[None])
    state, values = step_fn(state, positions, group, mean[:, :, 0], log_scale[:, :, 0])
    indices = tf.concat([positions, tf.fill([tf.shape(positions)[0], 1], group)], axis=1)
    buffer = tf.tensor_scatter_nd_update(buffer, indices, tf.transpose(values, [1, 0, 2]))
    return step + 1, buffer, state

  _, buffer, state = tf.while_loop(
      lambda step, *_: step < steps, body, (tf.constant(0), buffer, state),
      parallel_iterations=1)
  return to_latent(buffer), state


def gather_group(latent, positions, group, num_groups):
  """The chunks of `group` at `positions`: latent [B, h, w, M] -> [B, n, M / K]."""
  c = latent.shape[-1] // num_groups
  values = tf.gather_nd(tf.transpose(latent, [1, 2, 0, 3]), positions)  # [n, B, M]
  values = tf.transpose(values, [1, 0, 2])
  return tf.gather(values, tf.range(c) + group * c, axis=2)
