"""Encoder-side latent refinement: a slower, better encoder for the same decoder.

The analysis transform predicts y in one pass, for all images alike; for one image, a few
gradient steps on y against the model's own rate-distortion loss (at the quality's
lambda) find a latent the unchanged decoder reconstructs better for about the same bits
(the amortization gap; Campos et al. 2019, "Content adaptive optimization for neural
image compression"). The file format does not change: the refined y is then coded like
any other. Steps use Adam with a cosine-decayed step size that shrinks as the number of
steps grows (a fixed budget, STEP_SIZE_BUDGET), and noise from a fixed seed, so the same
image and settings always give the same file.
"""

import math

import tensorflow as tf
import tensorflow_compression as tfc

from tflic.model import distortion as distortion_lib

# The first step size times the number of steps. On 8 Kodak 256x256 crops (step 85,623,
# coded files, BD-rate against the plain encoder) the best step sizes were about this over
# the steps: 10 steps at 0.02 gave -5.2% (-4.5% at 0.01, -2.4% at 0.004), 20 at 0.01 -5.8%
# (-4.0% at 0.02), 50 at 0.004 -6.2% (-4.9% at 0.01); larger ones overshoot to higher rates.
STEP_SIZE_BUDGET = 0.2
_BETA1, _BETA2, _EPSILON = 0.9, 0.999, 1e-8


def rd_objective(model, x, quality, height=None, width=None, distortion="mse"):
  """The training loss of a latent for image x, as a function `loss(y, seed)`.

  x is the padded image; only its first height x width pixels count (default: all). Rate:
  bits of y and z plus uniform noise (stateless, from `seed`), y's context rounded as the
  decoder's is; distortion: the model's own ("mse" or "ms-ssim", tflic.model.distortion) of the
  synthesis of y rounded around its means, with straight-through gradients. What does not
  depend on y (z's quantization offsets, the gain, lambda) is computed here once, not in
  every refinement step.
  """
  height = tf.shape(x)[1] if height is None else height
  width = tf.shape(x)[2] if width is None else width
  z_offset = model.hyper_entropy_model().quantization_offset
  log_gain = model.log_gain(quality)
  lmbda = model.lambda_of(quality)
  num_pixels = tf.cast(height * width, tf.float32)
  target = x[:, :height, :width]
  if distortion == "ms-ssim":
    check = tf.debugging.assert_greater_equal(
        tf.minimum(height, width), distortion_lib.MS_SSIM_MIN_SIDE,
        message=f"latent refinement of an ms-ssim model needs images of at least "
                f"{distortion_lib.MS_SSIM_MIN_SIDE} pixels per side")
    with tf.control_dependencies([check]):
      target = tf.identity(target)

  def loss(y, seed):
    noise = lambda tensor, k: tf.random.stateless_uniform(
        tf.shape(tensor), tf.stack([seed, k]), -0.5, 0.5)
    z = model.hyper_latent(y)
    bits_z = -tf.reduce_sum(model.hyperprior.log_prob(z + noise(z, 1))) / math.log(2)
    hyper = model.hyper_features(tfc.round_st(z, z_offset), tf.shape(y)[1], tf.shape(y)[2])
    mean, log_scale = model.context(model.rounded_context(y, tf.round(y), hyper), hyper)
    scale = model.scale_fn(model.scale_index(log_scale))
    bits_y = -tf.reduce_sum(
        tfc.NoisyNormal(loc=mean, scale=scale).log_prob(y + noise(y, 2))) / math.log(2)
    x_hat = model.synthesize(tfc.round_st(y - mean) + mean, log_gain)
    return (bits_y + bits_z) / num_pixels + distortion_lib.weighted_distortion(
        x_hat[:, :height, :width], target, lmbda, distortion)

  return loss


def refine_latent(model, x, y, quality, steps, learning_rate=None,
                  height=None, width=None, distortion="mse"):
  """y after `steps` Adam steps on `rd_objective` (graph-friendly: a tf.while_loop).

  Args:
    model: a trained `TflicModel`.
    x: the padded image [1, H, W, 3] in [0, 1] that y was analysed from.
    y: its latent, analysis(x) times the quality's gain.
    quality: scalar in [0, 1].
    steps: int32 scalar, number of steps (0 returns y).
    learning_rate: the first step size, in quantization steps; it decays to 0. Default:
      STEP_SIZE_BUDGET / steps.
    height, width: the unpadded image size (default: all of x).
    distortion: what the model was trained for, "mse" or "ms-ssim".
  """
  objective = rd_objective(model, x, quality, height, width, distortion)
  steps = tf.cast(steps, tf.int32)
  if learning_rate is None:
    learning_rate = STEP_SIZE_BUDGET / tf.cast(tf.maximum(steps, 1), tf.float32)

  def body(t, y, m, v):
    with tf.GradientTape() as tape:
      tape.watch(y)
      loss = objective(y, t)
    g = tape.gradient(loss, y)
    m = _BETA1 * m + (1 - _BETA1) * g
    v = _BETA2 * v + (1 - _BETA2) * tf.square(g)
    n = tf.cast(t + 1, tf.float32)
    progress = tf.cast(t, tf.float32) / tf.cast(tf.maximum(steps, 1), tf.float32)
    rate = learning_rate * 0.5 * (1 + tf.cos(math.pi * progress))
    step = rate * (m / (1 - _BETA1**n)) / (tf.sqrt(v / (1 - _BETA2**n)) + _EPSILON)
    return t + 1, y - step, m, v

  zeros = tf.zeros_like(y)
  _, y, _, _ = tf.while_loop(lambda t, *_: t < steps, body,
                             (tf.constant(0), y, zeros, zeros))
  return y
