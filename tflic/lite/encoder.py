"""A .tflic encoder without TensorFlow: LiteRT analysis, the C entropy core.

`Encoder(model_dir)` reads an export of `python -m export.tflite` that has the encoder's
networks (analysis.tflite) and writes the files the SavedModel's `compress` writes: the
same steps (quality code, pixels / 255 padded by edge replication, y = g_a(x) times the
quality's gains, z = h_a(y), then quantization, the integer entropy model and range
coding in the C core, `tflic.codec.rangecoder.entropy_core`). Every decoder reads its files.
Only the float networks run on another runtime: where LiteRT's y or z differ from
TensorFlow's by float noise across a rounding boundary, a symbol differs and the file is
another valid file of the same image (README: the sizes and PSNR on Kodak).
"""

import numpy as np

from tflic.codec import bitstream
from tflic.codec import image_io
from tflic.codec.rangecoder import entropy_core
from tflic import errors
from tflic.lite import decoder as decoder_lib
from tflic.lite import synthesis as networks

MIN_SIDE = bitstream.MIN_SIDE


def padded_pixels(image):
  """The analysis' input of a uint8 image [H, W, 3]: float32 pixels / 255 [1, H', W', 3],
  padded at the bottom and right by edge replication to multiples of 16 (as
  `tflic.model.tflic_model.pad_to_multiple`)."""
  height, width = image.shape[:2]
  stride = bitstream.LATENT_STRIDE
  x = image.astype(np.float32) / np.float32(255.0)
  x = np.pad(x, [(0, -height % stride), (0, -width % stride), (0, 0)], mode="edge")
  return x[None]


class Encoder:
  """Encodes images with one exported model.

  Args:
    model_dir: a directory written by `python -m export.tflite` (with the analysis).
    num_threads: LiteRT threads for the analysis (None: this process's CPUs).
  """

  def __init__(self, model_dir, num_threads=None):
    manifest = decoder_lib.read_manifest(model_dir)
    self.fingerprint = bytes.fromhex(manifest["fingerprint"])
    self.mode = manifest["context_mode"]
    paths = decoder_lib.checked_files(model_dir, manifest, ("entropy_model", "analysis"))
    self.core = decoder_lib.load_core(model_dir, paths)
    self.analysis = networks.Analysis(paths["analysis"], num_threads=num_threads)

  def latents(self, image, quality):
    """(y, z, quality code): the analysis' float32 latents of a uint8 image [H, W, 3]."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
      raise errors.TflicError(f"expected a uint8 RGB image, got {image.dtype} {image.shape}")
    if min(image.shape[:2]) < MIN_SIDE or max(image.shape[:2]) > bitstream.MAX_SIDE:
      raise errors.TflicError(f"image size {image.shape[1]}x{image.shape[0]} is outside "
                              f"{MIN_SIDE}..{bitstream.MAX_SIDE} pixels per side")
    code = bitstream.quality_code(quality)
    stored = np.float32(code) / np.float32(bitstream.QUALITY_STEPS)
    y, z = self.analysis(padded_pixels(image), stored)
    return y, z, code

  def compress(self, image, quality, max_pixels=image_io.DEFAULT_MAX_PIXELS, progress=None):
    """uint8 [H, W, 3] and quality in [0, 1] -> .tflic file bytes. progress(stage, done,
    total), if given, hears of the analysis and of the coding loop's chunks
    (`tflic.codec.progress`)."""
    image = np.asarray(image)
    if image.ndim >= 2 and image.shape[0] * image.shape[1] > max_pixels:
      raise errors.TflicError(f"image of {image.shape[1]}x{image.shape[0]} pixels exceeds "
                              f"the limit of {max_pixels} (--max_pixels)")
    report = progress or (lambda stage, done, total: None)
    report("analysis", 0, 1)
    y, z, code = self.latents(image, quality)
    report("analysis", 1, 1)
    coding = self.core.coding_progress(progress, *y.shape[1:3])
    try:
      z_stream, y_stream, check, _ = self.core.encode(y, z, progress=coding)
    except entropy_core.CoreError as e:
      raise errors.TflicError(f"compression failed: {e}") from None
    height, width = image.shape[:2]
    return bitstream.pack(self.mode, self.fingerprint, height, width, code, z_stream,
                          y_stream, check)
