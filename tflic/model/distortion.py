"""The distortion term of the rate-distortion loss, shared by training and refinement.

A model is trained for one distortion (the config's `train.distortion`); the encoder's latent
refinement must optimize the same one at the same lambda, or it moves the latent away from
what the model's rate-distortion trade-off means.
"""

import tensorflow as tf

from tflic import config

# Three scales (the first three of Wang et al.'s five weights): the five-scale MS-SSIM needs
# 161-pixel sides, more than small training patches and images have.
MS_SSIM_POWER_FACTORS = (0.0448, 0.2856, 0.3001)
# The smallest side the three-scale MS-SSIM accepts (its 11-tap window at scale 1/4).
MS_SSIM_MIN_SIDE = 41
_WINDOW, _SIGMA, _K1, _K2 = 11, 1.5, 0.01, 0.03
# Factors at or below 0 are raised to their powers from this floor: tf.image.ssim_multiscale
# clips them with a ReLU, whose zeros give pow() infinite gradients and the whole loss NaN
# gradients (tensorflow/tensorflow#50400), e.g. for an untrained model's reconstructions.
_FLOOR = 1e-6


def ms_ssim(x_hat, x, power_factors=MS_SSIM_POWER_FACTORS):
  """MS-SSIM of each image in a batch (values in [0, 1]), with finite gradients everywhere.

  Equal to `tf.image.ssim_multiscale(x_hat, x, 1.0, power_factors)` (the same Gaussian
  window, downsampling and constants) wherever its contrast-structure factors are positive.
  """
  window = tf.exp(-tf.square(tf.range(_WINDOW, dtype=tf.float32) - _WINDOW // 2) /
                  (2 * _SIGMA**2))
  window = tf.tensordot(window, window, axes=0) / tf.square(tf.reduce_sum(window))
  window = tf.tile(window[:, :, None, None], [1, 1, x.shape[-1], 1])
  local_mean = lambda t: tf.nn.depthwise_conv2d(t, window, [1, 1, 1, 1], "VALID")
  factors = []
  for scale in range(len(power_factors)):
    if scale:
      x_hat, x = _halve(x_hat), _halve(x)
    mean_hat, mean = local_mean(x_hat), local_mean(x)
    mean_product = 2 * mean_hat * mean
    mean_squares = tf.square(mean_hat) + tf.square(mean)
    factor = ((2 * local_mean(x_hat * x) - mean_product + _K2**2) /
              (local_mean(tf.square(x_hat) + tf.square(x)) - mean_squares + _K2**2))  # cs
    if scale == len(power_factors) - 1:  # luminance only counts at the coarsest scale
      factor *= (mean_product + _K1**2) / (mean_squares + _K1**2)
    factors.append(tf.reduce_mean(factor, axis=[1, 2]))  # [batch, channels]
  factors = tf.maximum(tf.stack(factors, axis=-1), _FLOOR)
  return tf.reduce_mean(tf.reduce_prod(factors**tf.constant(power_factors), axis=-1), -1)


def _halve(images):
  """2x2 average pooling, odd sizes first padded by mirroring (as tf.image does)."""
  shape = tf.shape(images)
  images = tf.pad(images, [[0, 0], [0, shape[1] % 2], [0, shape[2] % 2], [0, 0]],
                  mode="SYMMETRIC")
  return tf.nn.avg_pool2d(images, 2, 2, "VALID")


def distortion_term(x_hat, x, kind):
  """255^2 * MSE, or 1 - MS-SSIM, of x_hat against x (both in [0, 1]), batch-averaged."""
  if kind == "mse":
    return 255.0**2 * tf.reduce_mean(tf.square(x_hat - x))
  if kind == "ms-ssim":
    return 1 - tf.reduce_mean(ms_ssim(tf.clip_by_value(x_hat, 0, 1), x))
  raise ValueError(f"distortion must be one of {config.DISTORTIONS}, got {kind!r}")


def weighted_distortion(x_hat, x, lmbda, kind):
  """lambda * `distortion_term`: the term added to bits per pixel in the loss."""
  return lmbda * distortion_term(x_hat, x, kind)
