"""The distortion term shared by training and latent refinement."""

import numpy as np
import pytest
import tensorflow as tf

from tflic.model import distortion

TF_MS_SSIM = lambda a, b: tf.image.ssim_multiscale(
    a, b, 1.0, power_factors=distortion.MS_SSIM_POWER_FACTORS)


def _pair(height=48, width=64, noise=0.05):
  x = tf.random.stateless_uniform([2, height, width, 3], [1, 2])
  noisy = x + tf.random.stateless_normal(x.shape, [3, 4], stddev=noise)
  return tf.clip_by_value(noisy, 0, 1), x


@pytest.mark.parametrize("height,width", [(48, 64), (45, 61), (256, 256)])
def test_ms_ssim_equals_tensorflows_where_that_is_defined(height, width):
  x_hat, x = _pair(height, width)
  np.testing.assert_allclose(distortion.ms_ssim(x_hat, x), TF_MS_SSIM(x_hat, x), rtol=1e-5)


def test_ms_ssim_gradients_stay_finite_where_tensorflows_are_nan():
  x = tf.random.stateless_uniform([1, 48, 56, 3], [1, 1])
  unrelated = tf.random.stateless_uniform([1, 48, 56, 3], [2, 2])
  gradients = []
  for fn in (TF_MS_SSIM, distortion.ms_ssim):
    with tf.GradientTape() as tape:
      tape.watch(unrelated)
      value = fn(unrelated, x)
    gradients.append(tape.gradient(value, unrelated).numpy())
  assert np.isnan(gradients[0]).any()  # the library bug this works around
  assert np.isfinite(gradients[1]).all() and np.abs(gradients[1]).max() > 0


def test_mse_is_lambda_times_mse_in_8_bit_units():
  x_hat, x = _pair()
  expected = 0.01 * np.mean((255 * (x_hat.numpy() - x.numpy()))**2)
  assert float(distortion.weighted_distortion(x_hat, x, 0.01, "mse")) == pytest.approx(
      expected, rel=1e-5)


def test_ms_ssim_term_is_lambda_times_one_minus_ms_ssim():
  x_hat, x = _pair()
  value = float(distortion.weighted_distortion(x_hat, x, 10.0, "ms-ssim"))
  assert value == pytest.approx(10.0 * (1 - float(tf.reduce_mean(TF_MS_SSIM(x_hat, x)))),
                                rel=1e-4)
  assert 0 < value < 10.0
  assert float(distortion.weighted_distortion(x, x, 10.0, "ms-ssim")) == pytest.approx(
      0, abs=1e-5)


def test_min_side_is_the_smallest_the_metric_accepts():
  side = distortion.MS_SSIM_MIN_SIDE
  x_hat, x = _pair(side, side)
  assert np.isfinite(distortion.ms_ssim(x_hat, x)).all()
  TF_MS_SSIM(x_hat, x)
  with pytest.raises(tf.errors.InvalidArgumentError):
    TF_MS_SSIM(x_hat[:, 1:], x[:, 1:])


def test_unknown_distortion_is_refused():
  x_hat, x = _pair()
  with pytest.raises(ValueError, match="distortion must be one of"):
    distortion.weighted_distortion(x_hat, x, 1.0, "psnr")
