"""Parallel (teacher-forced) context pass == chunk-by-chunk pass in coding order."""

import numpy as np
import pytest
import tensorflow as tf

from tflic.model import coding_order
from tflic.model import context_model


def _stepwise(context, y_hat, hyper):
  """Means/log-scales computed step by step, each step seeing only decoded chunks."""
  k = context.num_groups

  def step_fn(state, positions, group, mean, log_scale):
    means, scales = state
    indices = tf.concat([positions, tf.fill([tf.shape(positions)[0], 1], group)], axis=1)
    means = tf.tensor_scatter_nd_update(means, indices, tf.transpose(mean, [1, 0, 2]))
    scales = tf.tensor_scatter_nd_update(scales, indices, tf.transpose(log_scale, [1, 0, 2]))
    return (means, scales), context_model.gather_group(y_hat, positions, group, k)

  b, h, w, m = y_hat.shape
  empty = tf.zeros([h, w, k, b, m // k])
  decoded, (means, scales) = context_model.coding_loop(
      lambda y, positions, groups: context.predict(y, hyper, positions, groups),
      [b, h, w, m], k, context.mode, step_fn, (empty, empty))
  to_latent = lambda t: tf.reshape(tf.transpose(t, [3, 0, 1, 2, 4]), [b, h, w, m])
  return decoded, to_latent(means), to_latent(scales)


@pytest.mark.parametrize("mode", coding_order.MODES)
@pytest.mark.parametrize("height,width", [(3, 5), (1, 4), (4, 1), (2, 2)])
def test_parallel_pass_equals_coding_order(mode, height, width):
  tf.random.set_seed(1)
  k, c = 3, 4
  context = context_model.ContextTransformer(
      num_groups=k, group_channels=c, window=3, dim=16, depth=2, num_heads=2, mode=mode)
  y_hat = tf.round(tf.random.normal([2, height, width, k * c]) * 3)
  hyper = tf.random.normal([2, height, width, 8])
  mean, log_scale = context(y_hat, hyper)
  decoded, step_mean, step_log_scale = _stepwise(context, y_hat, hyper)
  np.testing.assert_array_equal(decoded.numpy(), y_hat.numpy())
  np.testing.assert_allclose(step_mean.numpy(), mean.numpy(), atol=1e-5)
  np.testing.assert_allclose(step_log_scale.numpy(), log_scale.numpy(), atol=1e-5)


def test_future_chunks_do_not_change_predictions():
  """Changing a chunk changes only the predictions of chunks decoded after it."""
  tf.random.set_seed(2)
  k, c, h, w = 2, 3, 4, 4
  context = context_model.ContextTransformer(
      num_groups=k, group_channels=c, window=3, dim=8, depth=1, num_heads=1)
  y_hat = tf.random.normal([1, h, w, k * c])
  hyper = tf.random.normal([1, h, w, 4])
  mean, _ = context(y_hat, hyper)
  changed = tf.tensor_scatter_nd_add(y_hat, [[0, 2, 1, 0]], [10.0])  # group 0 at (2, 1)
  changed_mean, _ = context(changed, hyper)
  differs = np.abs(changed_mean.numpy() - mean.numpy()).reshape(h, w, k, c).max(-1) > 1e-6
  steps = coding_order.chunk_step(h, w, k, context.mode).numpy()
  assert differs.any()
  assert (steps[differs] > steps[2, 1, 0]).all()


def test_get_config_round_trip():
  context = context_model.ContextTransformer(
      num_groups=2, group_channels=3, window=5, dim=8, depth=1, num_heads=2, mode="serial")
  clone = context_model.ContextTransformer.from_config(context.get_config())
  assert clone.get_config() == context.get_config()


@pytest.mark.parametrize("mode", coding_order.MODES)
def test_candidate_slots_predict_what_the_whole_window_does(mode):
  """Leaving out the window slots a chunk can never see changes nothing: their
  attention weight is exactly 0."""
  tf.random.set_seed(4)
  context = context_model.ContextTransformer(
      num_groups=2, group_channels=3, window=5, dim=16, depth=2, num_heads=2, mode=mode)
  y_hat = tf.round(tf.random.normal([1, 6, 7, 6]) * 3)
  hyper = tf.random.normal([1, 6, 7, 8])
  assert len(context.slots) < 25
  candidates = context(y_hat, hyper)
  context.slots = np.arange(25, dtype=np.int32)
  for some, every in zip(candidates, context(y_hat, hyper)):
    np.testing.assert_allclose(some, every, rtol=1e-5, atol=1e-5)
