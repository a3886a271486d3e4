"""Distortion metrics on uint8 RGB images: PSNR and MS-SSIM, computed by TensorFlow.

MS-SSIM with its standard five scales needs at least 161 pixels on each side (the 11-tap window
must fit the coarsest scale). Smaller images use as many scales as fit, with the standard weights
of those scales renormalized to sum to one; the number of scales is returned so that reports can
say when a value is not the standard five-scale MS-SSIM. Below 11 pixels MS-SSIM is NaN.
"""

import atexit
import functools
import math
from typing import Dict

import numpy as np

# tf.image.ssim_multiscale's default weights, finest scale first (Wang et al., 2003).
MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_FILTER_SIZE = 11


def msssim_scales(height: int, width: int) -> int:
  """How many MS-SSIM scales fit an image; 0 if not even one does."""
  side = min(height, width)
  scales = 0
  # Each scale halves the image, padding odd sizes (ceil), and must still fit the window.
  while scales < len(MSSSIM_WEIGHTS) and math.ceil(side / 2**scales) >= _FILTER_SIZE:
    scales += 1
  return scales


def msssim_db(msssim: float) -> float:
  """MS-SSIM on a decibel scale, -10 log10(1 - MS-SSIM), which spreads out values near 1."""
  if math.isnan(msssim):
    return math.nan
  return -10.0 * math.log10(1.0 - msssim) if msssim < 1.0 else math.inf


@functools.lru_cache(maxsize=None)
def _metric_function(scales: int):
  """A tf.function computing (PSNR, MS-SSIM) for any image size, traced once per scale count.

  With 0 scales the MS-SSIM output is NaN.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  weights = list(MSSSIM_WEIGHTS[:scales])
  if 0 < scales < len(MSSSIM_WEIGHTS):
    total = sum(weights)
    weights = [w / total for w in weights]
  spec = tf.TensorSpec([None, None, 3], tf.uint8)

  @tf.function(input_signature=[spec, spec])
  def metrics(original, decoded):
    original = tf.cast(original, tf.float32)
    decoded = tf.cast(decoded, tf.float32)
    psnr = tf.image.psnr(original, decoded, max_val=255.0)
    if not scales:
      return psnr, tf.constant(math.nan)
    msssim = tf.image.ssim_multiscale(original, decoded, max_val=255.0,
                                      power_factors=weights)
    return psnr, msssim

  return metrics


# Dropping the traced functions before interpreter teardown avoids TensorFlow's noisy
# "Exception ignored in AtomicFunction.__del__" at exit.
atexit.register(_metric_function.cache_clear)


def compute(original: np.ndarray, decoded: np.ndarray) -> Dict[str, float]:
  """PSNR (RGB, dB) and MS-SSIM (linear and dB) of a decoded H x W x 3 uint8 image.

  Returns a dict with keys psnr, msssim, msssim_db and msssim_scales.
  """
  if original.shape != decoded.shape:
    raise ValueError(f"decoded shape {decoded.shape} differs from original {original.shape}")
  scales = msssim_scales(*original.shape[:2])
  psnr, msssim = _metric_function(scales)(original, decoded)
  msssim = float(msssim)
  return {
      "psnr": float(psnr),
      "msssim": msssim,
      "msssim_db": msssim_db(msssim),
      "msssim_scales": scales,
  }
