"""The full model: shapes, arbitrary sizes, rate control."""

import json
import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tflic import config
from tflic import errors
from tflic.model import checkpoint
from tflic.model.layers import fused_ops
from tflic.model import tflic_model as model_lib


@pytest.fixture(scope="module")
def tiny():
  tf.random.set_seed(0)
  return checkpoint.build_model(config.load("tiny"))


def test_training_pass_shapes(tiny):
  out = tiny(tf.random.uniform([2, 64, 96, 3]), 0.5)
  assert out["x_hat"].shape == (2, 64, 96, 3)
  assert out["y"].shape == (2, 4, 6, 32)
  assert out["bits_y"].shape == out["bits_z"].shape == (2,)
  assert (out["bits_y"].numpy() > 0).all()


def test_conv_resampling_variant_keeps_shapes():
  d = json.loads(config.load("tiny").to_json())
  d["model"]["resample_kernel"] = 3
  out = checkpoint.build_model(config.from_dict(d))(tf.random.uniform([1, 48, 80, 3]), 0.5)
  assert out["x_hat"].shape == (1, 48, 80, 3)
  assert out["y"].shape == (1, 3, 5, 32)
  d["model"]["resample_kernel"] = 4
  with pytest.raises(errors.TflicError, match="resample_kernel"):
    config.from_dict(d)


@pytest.mark.parametrize("size", [(37, 53), (16, 80), (97, 131), (5, 5)])
def test_any_size_is_padded_and_cropped(tiny, size):
  x = tf.random.uniform([1, *size, 3])
  x_hat, bits = tiny.reconstruct(x, 0.5, coded=False)
  assert x_hat.shape == x.shape
  padded = model_lib.pad_to_multiple(x, 16)
  assert padded.shape[1] % 16 == 0 and padded.shape[2] % 16 == 0
  ref = tiny(padded, 0.5, training=False, context_input="rounded")["x_hat"][:, :size[0], :size[1]]
  np.testing.assert_allclose(x_hat, ref, atol=1e-5)
  assert float(bits[0]) > 0


def test_edge_padding_replicates_last_row_and_column():
  x = tf.reshape(tf.range(6, dtype=tf.float32), [1, 2, 3, 1])
  padded = model_lib.pad_to_multiple(x, 4)[0, :, :, 0].numpy()
  assert padded.shape == (4, 4)
  np.testing.assert_array_equal(padded[:, 3], padded[:, 2])
  np.testing.assert_array_equal(padded[3], padded[1])


def test_coded_forward_rounds_around_the_mean(tiny):
  x = tf.random.uniform([1, 32, 48, 3])
  out = tiny.coded_forward(x, 0.3)
  residual = (out["y_hat"] - out["mean"]).numpy()
  np.testing.assert_allclose(residual, np.round(residual), atol=1e-4)


def _coded_latent_and_hyper(model, x, quality):
  coded = model.coded_forward(x, quality)
  y = coded["y"]
  return coded, y, model.hyper_features(coded["z_hat"], tf.shape(y)[1], tf.shape(y)[2])


def test_decoders_latent_is_a_fixed_point_of_the_rounded_context(tiny):
  coded, y, hyper = _coded_latent_and_hyper(tiny, tf.random.uniform([1, 48, 64, 3]), 0.3)
  np.testing.assert_allclose(tiny.rounded_context(y, coded["y_hat"], hyper),
                             coded["y_hat"], atol=1e-4)
  # round(y), the evaluation pass's default context, is not what the decoder sees.
  assert np.abs(tf.round(y) - coded["y_hat"]).max() > 0.01


def test_rounded_context_is_within_half_a_step_and_straight_through(tiny):
  _, y, hyper = _coded_latent_and_hyper(tiny, tf.random.uniform([1, 32, 48, 3]), 0.7)
  weights = tf.random.normal(tf.shape(y))
  with tf.GradientTape() as tape:
    tape.watch(y)
    context = tiny.rounded_context(y, y + tf.random.uniform(tf.shape(y), -0.5, 0.5), hyper)
    loss = tf.reduce_sum(context * weights)
  assert np.abs(context - y).max() <= 0.5 + 1e-5
  np.testing.assert_allclose(tape.gradient(loss, y), weights)


def test_rounded_context_input_trains_and_bad_names_are_refused(tiny):
  x = tf.random.uniform([2, 32, 32, 3])
  with tf.GradientTape() as tape:
    out = tiny(x, 0.5, training=True, context_input="rounded")
    loss = tf.reduce_mean(out["bits_y"])
  grads = [tf.convert_to_tensor(g) for g in tape.gradient(
      loss, tiny.analysis.trainable_variables + tiny.context.trainable_variables)]
  assert all(g is not None and np.isfinite(g.numpy()).all() for g in grads)
  assert any(np.abs(g.numpy()).max() > 0 for g in grads)
  with pytest.raises(ValueError, match="context_input"):
    tiny(x, 0.5, context_input="exact")


def test_rounded_hyper_input_is_the_codecs_z_hat_with_straight_through_gradient(
    tiny, monkeypatch):
  x = tf.random.uniform([2, 32, 32, 3], seed=3)
  seen = []
  hyper_features = tiny.hyper_features
  def spy(z_hat, height, width):
    seen.append(z_hat)
    return hyper_features(z_hat, height, width)
  monkeypatch.setattr(tiny, "hyper_features", spy)
  z = tiny.hyper_latent(tiny.analysis(x) * tf.exp(tiny.log_gain(0.5)))
  codec_z_hat = tiny.hyper_entropy_model().quantize(z)
  tiny(x, 0.5, training=True)
  assert np.abs(seen[-1] - codec_z_hat).max() > 0.01  # z plus noise
  with tf.GradientTape() as tape:
    out = tiny(x, 0.5, training=True, hyper_input="rounded")
    loss = tf.reduce_mean(out["bits_y"])
  np.testing.assert_array_equal(seen[-1], codec_z_hat)
  grads = tape.gradient(loss, tiny.hyper_analysis.trainable_variables)
  assert any(np.abs(tf.convert_to_tensor(g).numpy()).max() > 0 for g in grads)
  with pytest.raises(ValueError, match="hyper_input"):
    tiny(x, 0.5, hyper_input="exact")


def _coded_bits(tiny, out):
  """The bits of round(y - mean) under the predicted scales, in float64, per image."""
  k = np.round(out["y"] - out["mean"]).astype(np.float64)
  scale = tiny.scale_fn(tiny.scale_index(out["log_scale"])).numpy().astype(np.float64)
  # The Gaussian is symmetric, so each bin is measured in the upper tail of |k| and in log space:
  # a difference of two CDFs near 1 cancels to 0 in float64 beyond about 8 standard deviations,
  # which an untrained model's latents reach (CI saw it).
  lower = tfp.math.logerfc((np.abs(k) - 0.5) / (scale * math.sqrt(2))).numpy()
  upper = tfp.math.logerfc((np.abs(k) + 0.5) / (scale * math.sqrt(2))).numpy()
  log_p = math.log(0.5) + lower + np.log1p(-np.exp(upper - lower))
  return -log_p.sum(axis=(1, 2, 3)) / math.log(2)


def test_rounded_rate_input_is_the_bits_of_the_rounded_latent(tiny):
  x = tf.random.uniform([2, 32, 32, 3], seed=4)
  with tf.GradientTape() as tape:
    out = tiny(x, 0.5, training=True, quantization="ste", rate_input="rounded")
    loss = tf.reduce_mean(out["bits_y"] + out["bits_z"])
  np.testing.assert_allclose(out["bits_y"], _coded_bits(tiny, out), rtol=1e-3)
  grads = tape.gradient(loss, tiny.analysis.trainable_variables)
  assert all(np.isfinite(tf.convert_to_tensor(g).numpy()).all() for g in grads)
  assert any(np.abs(tf.convert_to_tensor(g).numpy()).max() > 0 for g in grads)
  with pytest.raises(ValueError, match="rate_input"):
    tiny(x, 0.5, rate_input="exact")


def test_split_rate_input_fits_the_scales_to_the_coded_bits(tiny):
  # The value is the coded bits; the context model (means, scales) learns from them alone,
  # while y also gets the noisy density's gradient.
  x = tf.random.uniform([2, 32, 32, 3], seed=5)
  with tf.GradientTape(persistent=True) as tape:
    out = tiny(x, 0.5, training=True, quantization="ste", rate_input="split")
    _, coded = tiny.latent_entropy_model()(
        tf.stop_gradient(out["y"]), tiny.scale_index(out["log_scale"]), loc=out["mean"],
        training=False)
  np.testing.assert_allclose(out["bits_y"], _coded_bits(tiny, out), rtol=1e-3)
  context = tiny.context.trainable_variables
  for mine, theirs in zip(tape.gradient(out["bits_y"], context), tape.gradient(coded, context)):
    np.testing.assert_allclose(tf.convert_to_tensor(mine), tf.convert_to_tensor(theirs),
                               rtol=1e-4, atol=1e-6)
  grads = tape.gradient(out["bits_y"], tiny.analysis.trainable_variables)
  assert all(np.isfinite(tf.convert_to_tensor(g).numpy()).all() for g in grads)
  assert any(np.abs(tf.convert_to_tensor(g).numpy()).max() > 0 for g in grads)


def test_initial_gains_follow_sqrt_lambda():
  fresh = checkpoint.build_model(config.load("tiny"))
  log_lambdas = np.log(np.array(config.load("tiny").model.lambdas))
  gains = fresh.log_gains.numpy()
  np.testing.assert_allclose(gains[1:] - gains[:-1],
                             np.tile(np.diff(log_lambdas)[:, None] / 2, [1, 32]), rtol=1e-5)
  np.testing.assert_allclose(gains.mean(0), 0, atol=1e-6)


def test_respread_gains_keeps_each_channels_mean(tiny):
  initial = tiny.log_gains.numpy()
  rng = np.random.default_rng(0)
  narrow = rng.normal(size=initial.shape).astype(np.float32) * 0.05 + 0.3
  tiny.log_gains.assign(narrow)
  tiny.respread_gains()
  np.testing.assert_allclose(tiny.log_gains.numpy().mean(0), narrow.mean(0), atol=1e-6)
  np.testing.assert_allclose(tiny.log_gains.numpy() - narrow.mean(0), initial, atol=1e-6)
  tiny.log_gains.assign(initial)


def test_quality_interpolates_gains(tiny):
  initial = tiny.log_gains.numpy()
  tiny.log_gains.assign(tf.reshape(tf.range(4 * 32, dtype=tf.float32), [4, 32]) / 100)
  np.testing.assert_allclose(tiny.log_gain(0.0), tiny.log_gains[0])
  np.testing.assert_allclose(tiny.log_gain(1.0), tiny.log_gains[3])
  np.testing.assert_allclose(tiny.log_gain(tiny.quality_of(2)), tiny.log_gains[2], atol=1e-6)
  middle = (tiny.log_gains[1] + tiny.log_gains[2]) / 2
  np.testing.assert_allclose(tiny.log_gain(0.5), middle, atol=1e-6)
  tiny.log_gains.assign(initial)


def test_scale_index_round_trip(tiny):
  index = tf.constant([0.0, 10.5, 63.0])
  log_scale = tf.math.log(tiny.scale_fn(index))
  np.testing.assert_allclose(tiny.scale_index(log_scale), index, atol=1e-4)
  assert float(tiny.scale_index(tf.constant(-50.0))) == 0.0
  assert float(tiny.scale_index(tf.constant(50.0))) == 63.0


@pytest.mark.parametrize("fused", [False, True])
def test_rate_gradient_lifts_a_scale_predicted_below_the_table(tiny, fused):
  # A non-zero latent predicted with a scale below the smallest table's is expensive: its
  # rate must pull the prediction up. A zero there is cheap, and nothing pushes it lower.
  if fused and not fused_ops.enabled():
    pytest.skip("the fused kernels are not built here")
  y = tf.constant([[[[1.0, 0.0]]]])
  log_scale = tf.Variable([[[[-8.0, -8.0]]]])
  with tf.GradientTape() as tape:
    if fused:
      _, bits = tiny._fused_noisy_rate(y, tf.zeros_like(y), log_scale)
    else:
      _, bits = tiny.latent_entropy_model()(
          y, tiny.scale_index(log_scale), loc=tf.zeros_like(y), training=True)
  grad = tape.gradient(bits, log_scale).numpy().ravel()
  assert grad[0] < 0.0
  assert grad[1] == 0.0


def test_coding_tables_sit_at_the_centre_of_their_scale_buckets(tiny):
  # The coder truncates the float index, so table i serves indexes [i, i + 1).
  values = tf.constant([[[[0.0, 1.0, 3.0, -2.0]]]])
  indexes = tf.constant([[[[0.0, 2.0, 20.0, 40.0]]]])
  _, coded = tiny.latent_entropy_model(compression=True)(values, indexes, training=False)
  _, centre = tiny.latent_entropy_model()(values, indexes + 0.5, training=False)
  _, edge = tiny.latent_entropy_model()(values, indexes, training=False)
  np.testing.assert_allclose(coded, centre, rtol=1e-5)
  assert abs(float(coded[0]) - float(edge[0])) > 0.05


def test_configs_load_and_reject_bad_input(tmp_path):
  from tflic import errors  # pylint: disable=g-import-not-at-top
  for name in ("tiny", "small", "medium", "wide", "cnn_small", "paper"):
    assert config.load(name).name == name
  with pytest.raises(errors.TflicError, match="no config named"):
    config.load("huge")
  bad = tmp_path / "bad.json"
  bad.write_text('{"model": {"latent_channels": 30, "num_groups": 4}}')
  with pytest.raises(errors.TflicError, match="invalid config"):
    config.load(str(bad))
  d = json.loads(config.load("tiny").to_json())
  for name in ("context_input", "hyper_input", "rate_input"):
    bad_input = json.loads(json.dumps(d))
    bad_input["train"][name] = "exact"
    with pytest.raises(errors.TflicError, match=f"{name} must be noise|rounded"):
      config.from_dict(bad_input)
  odd_heads = json.loads(json.dumps(d))
  odd_heads["model"].update(latent_depth=1, num_heads=[1, 1, 1, 3])
  with pytest.raises(errors.TflicError, match="divisible by num_heads"):
    config.from_dict(odd_heads)
  for name in ("lambda_weights", "loss_weights"):
    for weights in ([1, 1, 1], [1, -1, 1, 1], [0, 0, 0, 0]):  # tiny has four lambdas
      bad_weights = json.loads(json.dumps(d))
      bad_weights["train"][name] = weights
      with pytest.raises(errors.TflicError, match=f"{name} needs 4 non-negative"):
        config.from_dict(bad_weights)
