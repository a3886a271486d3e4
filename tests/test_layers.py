"""Swin layers: shapes, padding invariance, serialization."""

import numpy as np
import pytest
import tensorflow as tf

from tflic.model import layers
import tflic.model.layers.swin_block  # pylint: disable=unused-import
import tflic.model.layers.window_attention  # pylint: disable=unused-import


def _reference_block(block, x):
  """Plain attention over the real tokens of a map that fits in one window."""
  _, h, w, c = x.shape
  ws, heads = block.window_size, block.num_heads
  tokens = tf.reshape(block.norm1(x), [h * w, c])
  q, k, v = tf.split(block.attn.qkv(tokens), 3, axis=-1)
  split = lambda t: tf.transpose(tf.reshape(t, [h * w, heads, c // heads]), [1, 0, 2])
  q, k, v = split(q) * (c // heads)**-0.5, split(k), split(v)
  real = np.array([i * ws + j for i in range(h) for j in range(w)])
  index = layers.window_attention.relative_position_index(ws)[real][:, real]
  bias = tf.gather(block.attn.relative_position_bias_table, index)  # [n, n, heads]
  logits = tf.matmul(q, k, transpose_b=True) + tf.transpose(bias, [2, 0, 1])
  out = tf.matmul(tf.nn.softmax(logits), v)
  out = block.attn.proj(tf.reshape(tf.transpose(out, [1, 0, 2]), [h * w, c]))
  y = tf.reshape(tf.reshape(x, [h * w, c]) + out, x.shape)
  return y + block.mlp(block.norm2(y))


@pytest.mark.parametrize("size", [(3, 3), (4, 4), (2, 3)])
def test_padded_tokens_are_never_attended(size):
  """A map smaller than the window is padded; the result must equal attention over the
  real tokens alone (the padding is masked, not attended to as zeros)."""
  tf.random.set_seed(0)
  block = layers.SwinBlock(dim=8, num_heads=2, window_size=4)
  x = tf.random.normal([1, *size, 8])
  np.testing.assert_allclose(block(x), _reference_block(block, x), atol=1e-5)


def test_shifted_block_keeps_shape_and_is_finite():
  tf.random.set_seed(0)
  block = layers.SwinBlock(dim=8, num_heads=2, window_size=4, shift=True)
  x = tf.random.normal([2, 5, 7, 8])
  y = block(x)
  assert y.shape == x.shape
  assert np.isfinite(y.numpy()).all()


def test_identity_block_passes_its_input_through():
  tf.random.set_seed(0)
  block = layers.SwinBlock(dim=8, num_heads=2, window_size=4, shift=True)
  x = tf.random.normal([2, 5, 7, 8])
  assert np.abs(block(x) - x).max() > 1e-3
  block.make_identity()
  np.testing.assert_array_equal(block(x), x)


def test_shift_mask_separates_wrapped_regions():
  mask = layers.swin_block.attention_mask(4, 4, 4, 4, window_size=2, shift=1).numpy()
  # The last window of the rolled map holds tokens from all four image corners:
  # each may only attend to itself.
  assert ((mask[-1] == 0) == np.eye(4, dtype=bool)).all()
  assert (mask[0] == 0).all()


@pytest.mark.parametrize("layer", [
    layers.SwinBlock(dim=8, num_heads=2, window_size=4, shift=True, mlp_ratio=2.0),
    layers.WindowAttention(dim=8, num_heads=2, window_size=4),
    layers.PatchMerging(out_dim=6),
    layers.PatchMerging(out_dim=6, norm=False),
    layers.PatchSplit(out_dim=6),
    layers.PatchMerging(out_dim=6, norm=False, kernel_size=3),
    layers.PatchSplit(out_dim=6, norm=False, kernel_size=3),
    layers.CrossAttentionBlock(dim=8, num_heads=2),
])
def test_get_config_round_trip(layer):
  clone = type(layer).from_config(layer.get_config())
  assert clone.get_config() == layer.get_config()


def test_resampling_shapes():
  x = tf.zeros([2, 8, 6, 5])
  assert layers.PatchMerging(7)(x).shape == (2, 4, 3, 7)
  assert layers.PatchSplit(3)(x).shape == (2, 16, 12, 3)
  assert layers.PatchMerging(7, kernel_size=5)(x).shape == (2, 4, 3, 7)
  assert layers.PatchSplit(3, kernel_size=3)(x).shape == (2, 16, 12, 3)
  with pytest.raises(ValueError, match="odd"):
    layers.PatchMerging(7, kernel_size=2)


def test_cross_attention_ignores_masked_tokens():
  tf.random.set_seed(0)
  block = layers.CrossAttentionBlock(dim=8, num_heads=2)
  queries = tf.random.normal([3, 2, 8])
  context = tf.random.normal([3, 5, 8])
  mask = tf.constant([[True, False, True, False, False]] * 2)[None]
  out = block(queries, context, mask)
  changed = tf.concat([context[:, :1], context[:, 1:2] * 100, context[:, 2:3],
                       context[:, 3:] + 50], axis=1)
  np.testing.assert_allclose(block(queries, changed, mask), out, atol=1e-6)


def test_stack_is_a_sequential_without_a_graph_network(tmp_path):
  """Stack computes what tf.keras.Sequential does with the same layers, writes the same
  checkpoint keys (so checkpoints of either restore into the other), round-trips its
  config, and calls its layers directly: it builds no functional graph (which traced
  every layer a second time)."""
  def make(kind):
    return kind([tf.keras.layers.Dense(6, name="a"),
                 layers.PatchSplit(4, norm=False, kernel_size=3, name="b")], name="stack")

  x = tf.random.stateless_normal([2, 3, 5, 7], seed=[1, 2])
  stack, sequential = make(layers.Stack), make(tf.keras.Sequential)
  stack(x)
  sequential(x)
  sequential.set_weights(stack.get_weights())
  np.testing.assert_array_equal(stack(x), sequential(x))
  assert not stack._graph_initialized  # pylint: disable=protected-access
  assert sequential._graph_initialized  # pylint: disable=protected-access
  assert stack(tf.zeros([1, 4, 4, 7])).shape == (1, 8, 8, 4)  # any other shape

  def keys(model, name):
    return sorted(key for key, _ in tf.train.list_variables(
        tf.train.Checkpoint(model=model).write(str(tmp_path / name))))

  assert keys(stack, "stack") == keys(sequential, "sequential")
  restored = make(layers.Stack)
  restored(x)
  for variable in restored.variables:
    variable.assign(tf.zeros_like(variable))
  tf.train.Checkpoint(model=restored).read(str(tmp_path / "sequential")).assert_consumed()
  np.testing.assert_array_equal(restored(x), sequential(x))
  rebuilt = layers.Stack.from_config(stack.get_config())
  assert isinstance(rebuilt, layers.Stack)
  assert [layer.name for layer in rebuilt.layers] == ["a", "b"]


def test_layer_norm_trains_with_keras_values_and_gradients():
  """LayerNorm's training path computes Keras's LayerNormalization and its gradient (to
  float rounding); outside training it is Keras's, to the bit."""
  tf.random.set_seed(1)
  x = tf.random.normal([2, 5, 7, 12]) * 3.0 + 1.0
  ours = layers.LayerNorm(epsilon=1e-5)
  keras = tf.keras.layers.LayerNormalization(epsilon=1e-5)
  ours.build(x.shape)
  keras.build(x.shape)
  for layer in (ours, keras):  # not the initial ones and zeros
    layer.gamma.assign(tf.random.stateless_normal([12], [1, 2]))
    layer.beta.assign(tf.random.stateless_normal([12], [3, 4]))
  weights = tf.random.normal(x.shape)
  results = []
  for layer, training in ((ours, True), (keras, True)):
    with tf.GradientTape() as tape:
      tape.watch(x)
      loss = tf.reduce_sum(layer(x, training=training) * weights)
    results.append([loss] + tape.gradient(loss, [x, layer.gamma, layer.beta]))
  for mine, theirs in zip(*results):
    np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(ours(x, training=False), keras(x, training=False))
  clone = layers.LayerNorm.from_config(ours.get_config())
  assert clone.get_config() == ours.get_config()


def test_gelu_dense_trains_with_keras_values_and_gradients():
  """GeluDense's training path computes Dense(activation="gelu") and its gradient (to
  float rounding); outside training it is Keras's, to the bit."""
  tf.random.set_seed(2)
  x = tf.random.normal([3, 4, 10]) * 2.0
  ours = layers.GeluDense(6)
  keras = tf.keras.layers.Dense(6, activation="gelu")
  ours.build(x.shape)
  keras.build(x.shape)
  keras.set_weights(ours.get_weights())
  results = []
  for layer in (ours, keras):
    with tf.GradientTape() as tape:
      tape.watch(x)
      loss = tf.reduce_sum(tf.sin(layer(x, training=True)))
    results.append([loss] + tape.gradient(loss, [x] + layer.trainable_variables))
  for mine, theirs in zip(*results):
    np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(ours(x, training=False), keras(x, training=False))
  clone = layers.GeluDense.from_config(ours.get_config())
  assert clone.get_config() == ours.get_config()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_normalization_and_gelu_train_in_float32_under_mixed_precision(dtype):
  """Under a mixed policy the layers take and give `dtype`, and their gradients reach
  the float32 variables."""
  tf.keras.mixed_precision.set_global_policy(f"mixed_{dtype}")
  try:
    norm, dense = layers.LayerNorm(), layers.GeluDense(4)
  finally:
    tf.keras.mixed_precision.set_global_policy("float32")
  x = tf.random.normal([2, 3, 8])
  with tf.GradientTape() as tape:
    y = dense(norm(x, training=True), training=True)
    loss = tf.reduce_sum(tf.cast(y, tf.float32))
  assert y.dtype == dtype
  variables = norm.trainable_variables + dense.trainable_variables
  assert all(v.dtype == tf.float32 for v in variables)
  assert all(np.all(np.isfinite(g)) and np.any(g != 0)
             for g in tape.gradient(loss, variables))


@pytest.mark.parametrize("shift", [False, True])
def test_swin_block_skips_padding_and_zero_mask_on_whole_windows_to_the_bit(shift):
  """A map of static shape that fills whole windows skips the padding and (unshifted) the
  all-zero mask: the same numbers as the general path a dynamic shape takes."""
  tf.random.set_seed(3)
  block = layers.SwinBlock(dim=8, num_heads=2, window_size=4, shift=shift)
  x = tf.random.normal([2, 8, 12, 8])
  static = tf.function(block, input_signature=[tf.TensorSpec(x.shape)])
  general = tf.function(block, input_signature=[tf.TensorSpec([None, None, None, 8])])
  np.testing.assert_array_equal(static(x), general(x))


def test_shifted_swin_block_trains_with_tf_roll_as_it_infers_with_slices():
  """A shifted block rolls with tf.roll in training (a cheaper gradient) and with slices
  and a concat otherwise (LiteRT builtins): the same output up to its layers' training
  rounding, and gradients that reach every variable."""
  tf.random.set_seed(4)
  block = layers.SwinBlock(dim=8, num_heads=2, window_size=4, shift=True)
  x = tf.random.normal([2, 8, 12, 8])
  block(x)
  for variable in block.trainable_variables:  # residual branches away from zero
    variable.assign(tf.random.normal(variable.shape, stddev=0.3))
  with tf.GradientTape() as tape:
    trained = block(x, training=True)
  grads = tape.gradient(trained, block.trainable_variables)
  inferred = tf.function(block)(x)
  assert not any(op.type == "Roll" for op in
                 tf.function(block).get_concrete_function(x).graph.get_operations())
  np.testing.assert_allclose(trained, inferred, rtol=1e-5, atol=1e-5)
  assert all(np.any(g != 0) for g in grads)
