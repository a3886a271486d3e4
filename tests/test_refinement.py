"""Encoder-side latent refinement: lowers the loss it optimizes, deterministically."""

import numpy as np
import pytest
import tensorflow as tf

from tflic.codec import refinement
from tflic import config
from tflic.model import checkpoint
from tflic.model import tflic_model as model_lib


@pytest.fixture(scope="module")
def tiny():
  tf.random.set_seed(1)
  return checkpoint.build_model(config.load("tiny"))


def _inputs(model, quality=0.5, height=40, width=56):
  image = tf.random.stateless_uniform([1, height, width, 3], [7, 7])
  x = model_lib.pad_to_multiple(image, model_lib.LATENT_STRIDE)
  return x, model.analysis(x) * tf.exp(model.log_gain(quality))


def _mean_loss(model, x, y, quality, height, width):
  """The objective averaged over seeds that the refinement steps do not use."""
  objective = refinement.rd_objective(model, x, quality, height, width)
  return np.mean([float(objective(y, seed)) for seed in range(1000, 1004)])


@pytest.fixture(scope="module")
def refine(tiny):
  """(x, y, refine(y, steps, learning_rate=None)): _inputs' latent refined at quality
  0.5, each form traced once (steps and the step size are tensors)."""
  x, y = _inputs(tiny)
  spec = [tf.TensorSpec(y.shape, tf.float32), tf.TensorSpec([], tf.int32)]
  default = tf.function(lambda y, steps: refinement.refine_latent(
      tiny, x, y, 0.5, steps, height=40, width=56), input_signature=spec)
  at_rate = tf.function(lambda y, steps, rate: refinement.refine_latent(
      tiny, x, y, 0.5, steps, learning_rate=rate, height=40, width=56),
                        input_signature=spec + [tf.TensorSpec([], tf.float32)])

  def run(y, steps, learning_rate=None):
    if learning_rate is None:
      return default(y, tf.constant(steps)).numpy()
    return at_rate(y, tf.constant(steps), tf.constant(learning_rate, tf.float32)).numpy()

  return x, y, run


def test_refinement_lowers_the_loss_and_is_deterministic(tiny, refine):
  x, y, refine = refine
  np.testing.assert_array_equal(refine(y, 0), y)
  refined = refine(y, 20)
  assert np.abs(refined - y).max() > 0
  assert _mean_loss(tiny, x, refined, 0.5, 40, 56) < 0.98 * _mean_loss(tiny, x, y, 0.5, 40, 56)
  np.testing.assert_array_equal(refine(y, 20), refined)


def test_padding_does_not_count_in_the_loss(tiny):
  x, y = _inputs(tiny)
  mask = np.zeros(x.shape, np.float32)
  mask[:, 40:] = mask[:, :, 56:] = 1
  other = x + tf.constant(mask) * 0.5
  loss = lambda image, height, width: float(
      refinement.rd_objective(tiny, image, 0.5, height, width)(y, 3))
  assert loss(x, 40, 56) == pytest.approx(loss(other, 40, 56), rel=1e-6)
  assert loss(other, 48, 64) != pytest.approx(loss(x, 48, 64), rel=1e-6)


def test_lambda_of_interpolates_in_log_space(tiny):
  lambdas = np.array(config.load("tiny").model.lambdas)
  assert float(tiny.lambda_of(0.0)) == pytest.approx(lambdas[0])
  assert float(tiny.lambda_of(1.0)) == pytest.approx(lambdas[-1])
  middle = float(tiny.lambda_of((tiny.quality_of(1) + tiny.quality_of(2)) / 2))
  assert middle == pytest.approx(np.sqrt(lambdas[1] * lambdas[2]), rel=1e-5)


def test_ms_ssim_models_are_refined_for_ms_ssim(tiny):
  x, y = _inputs(tiny, height=48, width=56)
  ms_ssim = refinement.rd_objective(tiny, x, 0.5, 48, 56, distortion="ms-ssim")
  mse = refinement.rd_objective(tiny, x, 0.5, 48, 56)
  assert float(ms_ssim(y, 3)) != pytest.approx(float(mse(y, 3)), rel=1e-3)
  refined = tf.function(lambda y: refinement.refine_latent(
      tiny, x, y, 0.5, 20, height=48, width=56, distortion="ms-ssim"))(y)
  held_out = lambda y: np.mean([float(ms_ssim(y, seed)) for seed in range(1000, 1004)])
  assert held_out(refined) < 0.98 * held_out(y)


def test_ms_ssim_refinement_refuses_images_too_small_to_measure(tiny):
  x, y = _inputs(tiny, height=40, width=56)
  with pytest.raises(tf.errors.InvalidArgumentError, match="at least 41 pixels per side"):
    refinement.rd_objective(tiny, x, 0.5, 40, 56, distortion="ms-ssim")(y, 0)


def test_default_step_size_is_the_budget_over_the_steps(refine):
  _, y, refine = refine
  for steps in (4, 10):
    np.testing.assert_allclose(
        refine(y, steps), refine(y, steps, learning_rate=refinement.STEP_SIZE_BUDGET / steps),
        rtol=1e-5, atol=1e-6)
  assert np.abs(refine(y, 4) - refine(y, 4, learning_rate=0.004)).max() > 1e-3
