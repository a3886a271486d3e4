"""The fused CPU kernels of LayerNorm, bias + GELU, window attention's heads and softmax
and the latent rate (tflic/model/layers/fused_ops.py) against TensorFlow's composite
path, which computes the same functions."""

import os
import types

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_compression as tfc

from tflic import config
from tflic.model import checkpoint
from tflic.model import layers
from tflic.model import tflic_model
from tflic.model.layers import fused_ops

# Skipped where `setup.py build_ext` has not built the kernels; under Bazel, which builds
# them (tflic/model/layers/BUILD), they must be there.
pytestmark = pytest.mark.skipif(not fused_ops.enabled() and "TEST_SRCDIR" not in os.environ,
                                reason="fused kernels not built")


def _training_pass(layer, inputs, fused, weights):
  """A layer's training output on `inputs` (the first watched) and the gradients of a
  weighted sum of it."""
  with tf.GradientTape() as tape:
    tape.watch(inputs[0])
    if fused:
      out = layer(*inputs, training=True)
    else:
      with fused_ops.disabled():
        out = layer(*inputs, training=True)
    loss = tf.reduce_sum(tf.cast(out, tf.float32) * weights)
  gradients = tape.gradient(loss, [inputs[0]] + layer.trainable_variables)
  return [out, loss] + [tf.convert_to_tensor(g) for g in gradients]  # a table's: sparse


def _assert_passes_agree(layer, inputs, dtype, bfloat16_tolerance=3e-2):
  """The fused and the composite training pass give the same outputs and gradients, up
  to rounding (float32) or to bfloat16's 8-bit mantissa."""
  weights = tf.random.stateless_normal(layer(*inputs).shape, [5, 3])
  fused = _training_pass(layer, inputs, True, weights)
  composite = _training_pass(layer, inputs, False, weights)
  assert fused[0].dtype == dtype
  tolerance = 1e-5 if dtype == tf.float32 else bfloat16_tolerance
  # The loss sums thousands of terms that cancel: its error is bounded by the terms'
  # absolute sum, not by its own size.
  terms = float(np.sum(np.abs(np.asarray(tf.cast(composite[0], tf.float32)) * weights)))
  for i, (mine, theirs) in enumerate(zip(fused, composite)):
    mine, theirs = np.asarray(tf.cast(mine, tf.float32)), np.asarray(
        tf.cast(theirs, tf.float32))
    scale = terms if i == 1 else max(1.0, float(np.max(np.abs(theirs))))
    np.testing.assert_allclose(mine, theirs, rtol=tolerance, atol=tolerance * scale)


def _in_policy(policy, make):
  previous = tf.keras.mixed_precision.global_policy()
  tf.keras.mixed_precision.set_global_policy(policy)
  try:
    return make()
  finally:
    tf.keras.mixed_precision.set_global_policy(previous)


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_fused_layers_compute_the_composite_values_and_gradients(policy):
  """LayerNorm's and GeluDense's training outputs and gradients with the fused kernels
  equal the composite path's up to rounding (float32), or to bfloat16's 8-bit mantissa;
  channel counts off the kernels' 16-lane blocks included."""
  norm, dense = _in_policy(policy, lambda: (layers.LayerNorm(epsilon=1e-5),
                                            layers.GeluDense(40)))
  dtype = tf.float32 if policy == "float32" else tf.bfloat16
  x = tf.cast(tf.random.stateless_normal([3, 5, 7, 37], [1, 2]) * 2.0 + 0.5, dtype)
  norm.build(x.shape)
  dense.build(x.shape)
  norm.gamma.assign(tf.random.stateless_normal([37], [3, 4]))
  norm.beta.assign(tf.random.stateless_normal([37], [5, 6]))
  dense.bias.assign(tf.random.stateless_normal([40], [7, 8]))
  dense.kernel.assign(tf.random.stateless_normal([37, 40], [10, 11]) * 0.2)
  for layer in (norm, dense):
    _assert_passes_agree(layer, [x], dtype, bfloat16_tolerance=2e-2)


def test_fused_gradients_match_finite_differences():
  """The registered gradients of both ops are their derivatives (float32)."""
  ops = fused_ops
  x = tf.random.stateless_normal([4, 19], [1, 1]) * 1.5
  gamma = tf.random.stateless_normal([19], [2, 2])
  beta = tf.random.stateless_normal([19], [3, 3])
  bias = tf.random.stateless_normal([19], [4, 4])
  for function, args in ((lambda x, g, b: ops.layer_norm(x, g, b, 1e-5), [x, gamma, beta]),
                         (ops.bias_gelu, [x, bias])):
    theoretical, numerical = tf.test.compute_gradient(function, args, delta=1e-2)
    for t, n in zip(theoretical, numerical):
      np.testing.assert_allclose(t, n, atol=5e-3)


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("masked", [False, True])
def test_window_attention_fused_softmax_matches_the_composite(policy, masked):
  """WindowAttention's training output and gradients (the relative position bias table's
  included) with the fused heads and softmax equal the composite path's, with and
  without a mask that repeats over the images' windows."""
  attention = _in_policy(policy, lambda: layers.WindowAttention(24, 3, 4))
  dtype = tf.float32 if policy == "float32" else tf.bfloat16
  images, windows_per_image, n = 2, 3, 16
  windows = tf.cast(tf.random.stateless_normal([images * windows_per_image, n, 24], [1, 3]),
                    dtype)
  attention(windows)
  attention.relative_position_bias_table.assign(
      tf.random.stateless_normal(attention.relative_position_bias_table.shape, [2, 3]))
  attention.qkv.bias.assign(tf.random.stateless_normal([72], [3, 3]))
  mask = None
  if masked:  # each window masks other pairs; every query keeps itself
    blocked = tf.random.stateless_uniform([windows_per_image, n, n], [4, 3]) < 0.4
    mask = tf.where(blocked & ~tf.eye(n, dtype=tf.bool), -1e4, 0.0)
  _assert_passes_agree(attention, [windows, mask], dtype)


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_cross_attention_fused_heads_match_the_composite(policy):
  """CrossAttentionBlock's training output and gradients with fused heads and batched
  products equal the composite path's (einsums), under a mask that broadcasts over the
  leading axes as the context model's does."""
  block = _in_policy(policy, lambda: layers.CrossAttentionBlock(16, 2))
  dtype = tf.float32 if policy == "float32" else tf.bfloat16
  queries = tf.cast(tf.random.stateless_normal([2, 5, 3, 16], [1, 4]), dtype)
  context = tf.cast(tf.random.stateless_normal([2, 5, 7, 16], [2, 4]), dtype)
  mask = tf.random.stateless_uniform([5, 3, 7], [3, 4]) < 0.6
  mask = tf.concat([mask[..., :-1], tf.ones_like(mask[..., :1])], -1)  # one always visible
  block(queries, context, mask)
  for dense in (block.query, block.key_value, block.proj):
    dense.bias.assign(tf.random.stateless_normal(dense.bias.shape, [4, dense.units]))
  _assert_passes_agree(block, [queries, context, mask], dtype)


def test_split_heads_adds_the_bias_and_moves_the_heads():
  """split_heads is qkv + bias, reshaped to [M, N, 3, H, D/H] and moved to three
  [M, H, N, D/H]; its gradient (x's and the bias's) is the derivative (float32)."""
  x = tf.random.stateless_normal([3, 5, 2 * 3 * 4], [9, 9])
  bias = tf.random.stateless_normal([24], [10, 10])
  expected = tf.unstack(tf.transpose(tf.reshape(x + bias, [3, 5, 3, 2, 4]), [2, 0, 3, 1, 4]))
  for mine, theirs in zip(fused_ops.split_heads(x, bias, 2), expected):
    np.testing.assert_array_equal(mine, theirs)
  function = lambda x, bias: tf.stack(fused_ops.split_heads(x, bias, 2))
  theoretical, numerical = tf.test.compute_gradient(function, [x, bias], delta=1e-2)
  for t, n in zip(theoretical, numerical):
    np.testing.assert_allclose(t, n, atol=5e-3)


def test_window_softmax_gradient_matches_finite_differences():
  """d/dlogits and d/dbias (summed over the windows) of the fused softmax (float32)."""
  logits = tf.random.stateless_normal([4, 2, 5, 5], [6, 6])
  bias = tf.random.stateless_normal([2, 5, 5], [7, 7])
  mask = tf.where(tf.random.stateless_uniform([2, 5, 5], [8, 8]) < 0.3, -3.0, 0.0)
  function = lambda logits, bias: fused_ops.window_softmax(logits, bias, mask)
  theoretical, numerical = tf.test.compute_gradient(function, [logits, bias], delta=1e-2)
  for t, n in zip(theoretical, numerical):
    np.testing.assert_allclose(t, n, atol=5e-3)
  # Rows sum to one; the mask repeats per image: window 2 is masked as window 0.
  probs = function(logits, bias)
  np.testing.assert_allclose(tf.reduce_sum(probs, -1), 1.0, rtol=1e-6)
  expected = tf.nn.softmax(logits + bias + tf.tile(mask, [2, 1, 1])[:, None], -1)
  np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-7)


def test_bfloat16_outputs_round_to_nearest_even_as_tensorflow_casts():
  """A bfloat16 output is the float32 result rounded as tf.cast rounds it."""
  x = tf.random.stateless_normal([64, 48], [5, 5])
  bias = tf.zeros([48])
  in_float = fused_ops.bias_gelu(x, bias)
  in_bfloat = fused_ops.bias_gelu(tf.cast(tf.cast(x, tf.bfloat16), tf.float32), bias)
  np.testing.assert_array_equal(
      tf.cast(fused_ops.bias_gelu(tf.cast(x, tf.bfloat16), bias), tf.float32),
      tf.cast(tf.cast(in_bfloat, tf.bfloat16), tf.float32))
  assert np.max(np.abs(in_float - in_bfloat)) > 0  # the input's rounding is seen


def test_inference_and_disabled_paths_use_no_fused_op():
  """Keras's own ops at inference (exports) and under `disabled()` (XLA), fused ops in
  training."""
  norm, dense = layers.LayerNorm(), layers.GeluDense(8)
  model = lambda x, training: dense(norm(x, training=training), training=training)

  def op_types(training, disable=False):
    function = tf.function(lambda x: model(x, training))
    if disable:
      with fused_ops.disabled():
        graph = function.get_concrete_function(tf.TensorSpec([2, 6])).graph
    else:
      graph = function.get_concrete_function(tf.TensorSpec([2, 6])).graph
    return {op.type for op in graph.get_operations()}

  assert {"TflicLayerNorm", "TflicBiasGelu"} <= op_types(True)
  attention = layers.WindowAttention(8, 2, 2)
  graph = tf.function(lambda x: attention(x, training=True)).get_concrete_function(
      tf.TensorSpec([3, 4, 8])).graph
  assert {"TflicWindowSoftmax", "TflicSplitHeads"} <= {op.type for op in graph.get_operations()}
  graph = tf.function(lambda x: attention(x, training=False)).get_concrete_function(
      tf.TensorSpec([3, 4, 8])).graph
  assert not any(op.type.startswith("Tflic") for op in graph.get_operations())
  block = layers.CrossAttentionBlock(8, 2)
  mask = tf.ones([4, 3, 5], tf.bool)
  for training in (True, False):
    graph = tf.function(lambda q, c: block(q, c, mask, training=training)).get_concrete_function(  # pylint: disable=cell-var-from-loop
        tf.TensorSpec([2, 4, 3, 8]), tf.TensorSpec([2, 4, 5, 8])).graph
    types = {op.type for op in graph.get_operations()}
    assert ("TflicSplitHeads" in types) == training
    assert ("Einsum" in types) != training
  assert not any(t.startswith("Tflic") for t in op_types(False))
  assert not any(t.startswith("Tflic") for t in op_types(True, disable=True))
  assert not fused_ops.enabled(tf.float16)


def test_shape_errors_are_one_line():
  with pytest.raises(tf.errors.InvalidArgumentError, match="gamma must be a vector"):
    fused_ops.layer_norm(tf.zeros([2, 5]), tf.ones([4]), tf.zeros([5]), 1e-5)
  with pytest.raises(tf.errors.InvalidArgumentError, match="bias must be a vector"):
    fused_ops.bias_gelu(tf.zeros([2, 5]), tf.ones([6]))
  with pytest.raises(tf.errors.InvalidArgumentError, match="x must be"):
    fused_ops.split_heads(tf.zeros([2, 4, 10]), tf.zeros([10]), 2)
  with pytest.raises(tf.errors.InvalidArgumentError, match="mask must be"):
    fused_ops.window_softmax(tf.zeros([3, 2, 4, 4]), tf.zeros([2, 4, 4]), tf.zeros([2, 4, 4]))
  with pytest.raises(tf.errors.InvalidArgumentError, match="bias must be"):
    fused_ops.window_softmax(tf.zeros([3, 2, 4, 4]), tf.zeros([3, 4, 4]))
  with pytest.raises(tf.errors.InvalidArgumentError, match="u and scale must have one shape"):
    fused_ops.noisy_normal_log_prob(tf.zeros([2, 5]), tf.ones([5]))


def _noisy_normal(u, scale, fused, dtype=tf.float32):
  """log p(u) at `scale` and its gradients (u, scale): the fused op's, or tfc's in `dtype`."""
  u, scale = tf.cast(u, dtype), tf.cast(scale, dtype)
  with tf.GradientTape() as tape:
    tape.watch([u, scale])
    if fused:
      log_prob = fused_ops.noisy_normal_log_prob(u, scale)
    else:
      log_prob = tfc.NoisyNormal(loc=tf.constant(0, dtype), scale=scale).log_prob(u)
  return [np.asarray(t, np.float64) for t in [log_prob] + tape.gradient(log_prob, [u, scale])]


def test_noisy_normal_log_prob_is_tfcs_to_float_rounding():
  """The fused rate kernel's values and gradients are tfc.NoisyNormal's log_prob computed in
  float64, rounded to float32, on a grid from p ~ 1 to far tails (log p ~ -1e5) at the
  scales training meets (scale_min 0.11 to scale_max 256); tfc's float32 composite is
  further from them wherever the two differ."""
  u = [0.0, 1e-6, 0.01, 0.25, 0.4999, 0.5, 0.5001, 0.75, 1.0, 1.6, 2.5, 4.0, 7.0, 12.0, 20.0,
       50.0, 300.0]
  u = np.concatenate([u, np.negative(u[1:])])
  scale = [0.11, 0.13, 0.3, 0.7, 1.0, 2.2, 5.0, 16.0, 64.0, 180.0, 256.0]
  u, scale = (np.float32(a).ravel() for a in np.meshgrid(u, scale, indexing="ij"))
  random = np.random.default_rng(0)
  random_scale = np.exp(random.uniform(np.log(0.11), np.log(256.0), 4000)).astype(np.float32)
  random_u = (random.standard_normal(4000) * random_scale *
              np.exp(random.uniform(-4, 2, 4000))).astype(np.float32)
  u, scale = np.concatenate([u, random_u]), np.concatenate([scale, random_scale])
  fused = _noisy_normal(u, scale, True)
  exact = _noisy_normal(u, scale, False, tf.float64)
  composite = _noisy_normal(u, scale, False, tf.float32)
  assert np.min(exact[0]) < -1e5 and np.max(exact[0]) > -1e-5
  for mine, truth, theirs in zip(fused, exact, composite):
    assert np.all(np.isfinite(mine))
    # Rounding to float32 (2^-24 relative), and at tiny values a few 1e-16 of double.
    np.testing.assert_allclose(mine, truth, rtol=1.2e-7, atol=1e-15)
    assert np.all(np.abs(mine - theirs) <= np.abs(theirs - truth) + 1.2e-7 * np.abs(truth) +
                  1e-15)


def test_noisy_normal_gradients_match_finite_differences():
  u = tf.constant([-3.0, -0.7, -0.2, 0.0, 0.3, 0.5, 1.4, 6.0])
  scale = tf.constant([0.4, 0.9, 0.15, 1.0, 2.5, 30.0, 0.6, 2.0])
  theoretical, numerical = tf.test.compute_gradient(fused_ops.noisy_normal_log_prob,
                                                    [u, scale], delta=1e-3)
  for t, n in zip(theoretical, numerical):
    np.testing.assert_allclose(t, n, rtol=2e-2, atol=2e-2)


def test_the_models_fused_rate_is_tfcs_with_the_same_noise(monkeypatch):
  """TflicModel's training pass computes bits_y, y_hat and the gradients of the variables
  with the fused rate kernel as with tfc's entropy model (the model's rate path alone
  switched, so that the layers' kernels do not differ), given the same seed; inference,
  the rounded rate and `disabled()` keep tfc's."""
  tf.random.set_seed(0)
  model = checkpoint.build_model(config.load("tiny"))
  model.log_gains.assign(model.log_gains + 1.5)  # latents spanning several steps
  x = tf.random.stateless_uniform([2, 64, 64, 3], [1, 2])
  weights = tf.random.stateless_normal([2, 64, 64, 3], [3, 4])
  calls = []
  kernel = fused_ops.noisy_normal_log_prob
  monkeypatch.setattr(fused_ops, "noisy_normal_log_prob",
                      lambda *args: calls.append(1) or kernel(*args))

  def training_pass():
    del calls[:]
    tf.random.set_seed(5)  # the same noise in both passes
    with tf.GradientTape() as tape:
      out = model(x, 0.4, training=True)
      loss = tf.reduce_sum(out["bits_y"]) + tf.reduce_sum(out["x_hat"] * weights)
    grads = tape.gradient(loss, model.trainable_variables)
    return len(calls), [out["bits_y"], out["y_hat"]] + [
        None if g is None else tf.convert_to_tensor(g) for g in grads]  # IndexedSlices too

  fused_calls, fused = training_pass()
  with monkeypatch.context() as patch:
    patch.setattr(tflic_model, "fused_ops", types.SimpleNamespace(enabled=lambda dtype: False))
    composite_calls, composite = training_pass()
  assert (fused_calls, composite_calls) == (1, 0)
  np.testing.assert_array_equal(fused[1], composite[1])  # the same noise
  assert [g is None for g in fused] == [g is None for g in composite]
  assert sum(g is not None for g in fused) > 100
  for mine, theirs in zip(fused, composite):
    if theirs is not None:
      np.testing.assert_allclose(mine, theirs, rtol=1e-4,
                                 atol=1e-5 * float(np.max(np.abs(theirs))))
  del calls[:]
  model(x, 0.4, training=False)
  model(x, 0.4, training=True, rate_input="rounded")
  with fused_ops.disabled():
    model(x, 0.4, training=True)
  assert not calls
