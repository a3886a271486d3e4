"""The codec: real .tflic files from a trained model, range coding inside the TF graph.

`CodecModule` is a tf.Module with two tf.functions, `compress(uint8 image, quality) ->
string` and `decompress(string) -> uint8 image`, that read and write the whole file
(header, checksum, z and y streams; see docs/bitstream.md) with TF and
tensorflow-compression ops only, so an exported SavedModel needs no tflic code. All chunks
of y go into one range-coded stream, chunk step by chunk step in coding order
(`context_model.coding_loop`). The range-coding tables are built once, when the module is
made, and kept as variables.

`Codec` wraps a CodecModule (or a loaded SavedModel) for Python callers: numpy in and
out, bitstream checks with clear messages (`tflic.errors.TflicError`).
"""

import hashlib
import os

import numpy as np
import tensorflow as tf
import tensorflow_compression as tfc

from tflic import bitstream as bitstream_format
from tflic import config
from tflic import context_model
from tflic import errors
from tflic import model as model_lib
from tflic import refinement

MIN_SIDE = 1
MAX_SIDE = bitstream_format.MAX_SIDE
# Symbols beyond this are clamped: tfc's range coder loops forever near +-2^30.
SYMBOL_LIMIT = 1 << 20
_HEADER_WITHOUT_CHECKSUM = bitstream_format.CHECKSUM_OFFSET
_ADLER_MOD = 65521


def _bytes_table():
  return tf.constant([bytes([i]) for i in range(256)])


def _to_bytes(values, dtype):
  """Little-endian bytes of integer `values` as a scalar string."""
  raw = tf.reshape(tf.bitcast(tf.cast(values, dtype), tf.uint8), [-1])
  return tf.strings.reduce_join(tf.gather(_bytes_table(), tf.cast(raw, tf.int32)))


def _from_bytes(raw):
  """Unsigned little-endian integer (int64) from uint8 bytes."""
  raw = tf.cast(raw, tf.int64)
  return tf.reduce_sum(raw * tf.bitwise.left_shift(tf.constant(1, tf.int64),
                                                   8 * tf.range(tf.size(raw, tf.int64))))


def adler32(data):
  """Adler-32 of a string, with TF ops (the same value as zlib.adler32)."""
  raw = tf.cast(tf.io.decode_raw(data, tf.uint8), tf.int64)
  n = tf.size(raw, tf.int64)
  a = (1 + tf.reduce_sum(raw)) % _ADLER_MOD
  b = (n + tf.reduce_sum(raw * (n - tf.range(n)))) % _ADLER_MOD
  return b * 65536 + a


def weights_fingerprint(variables):
  """First 8 bytes of the SHA-256 of the variables' shapes and values, in order.

  Names are left out: Keras numbers unnamed layers per process, so they are not stable.
  """
  digest = hashlib.sha256()
  for v in variables:
    digest.update(str(v.shape.as_list()).encode())
    digest.update(np.ascontiguousarray(v.numpy()).tobytes())
  return digest.digest()[:8]


class CodecModule(tf.Module):
  """compress / decompress tf.functions around a trained TflicModel.

  Args:
    model: a trained `TflicModel`.
    config_json: the model's config, stored with the module for provenance.
    mode: decoding order; must match the mask the model was trained with (None: the
      model's own).
    distortion: what the model was trained for ("mse" or "ms-ssim"); latent refinement
      optimizes it.
  """

  def __init__(self, model, config_json="", mode=None, distortion="mse", name="tflic_codec"):
    super().__init__(name=name)
    trained_mode = model.context.mode
    if mode is not None and mode != trained_mode:
      raise errors.TflicError(
          f"the model was trained with the {trained_mode} context mask; decoding it in "
          f"{mode} order would not reproduce its predictions")
    # The Keras model is kept out of the object graph (Keras would trace its training
    # call into the SavedModel); its variables are tracked directly instead.
    self.__dict__["model"] = model
    if distortion not in config.DISTORTIONS:
      raise errors.TflicError(f"unknown distortion {distortion!r}; expected one of "
                              f"{', '.join(config.DISTORTIONS)}")
    self.distortion = distortion
    self.model_variables = list(model.variables)
    self.latent_model = model.latent_entropy_model(compression=True)
    self.hyper_model = model.hyper_entropy_model(compression=True)
    self.mode_flag = tf.Variable(bitstream_format.MODE_FLAGS[trained_mode], trainable=False,
                                 dtype=tf.int32, name="mode_flag")
    self.fingerprint = tf.Variable(
        weights_fingerprint(model.weights + list(self.latent_model.variables) +
                            list(self.hyper_model.variables)),
        trainable=False, name="fingerprint")
    self.config_json = tf.Variable(config_json, trainable=False, name="config_json")

  def _latent_shape(self, height, width):
    stride = model_lib.LATENT_STRIDE
    return (height + stride - 1) // stride, (width + stride - 1) // stride

  @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8),
                                tf.TensorSpec([], tf.float32)])
  def compress(self, image, quality):
    """uint8 image [H, W, 3] and quality in [0, 1] -> the .tflic file as a string."""
    return self._compress(image, quality)

  @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8),
                                tf.TensorSpec([], tf.float32),
                                tf.TensorSpec([], tf.int32)])
  def compress_refined(self, image, quality, refine_steps):
    """As `compress`, with `refine_steps` of encoder-side latent refinement (see
    tflic.refinement): slower encoding, a smaller or better file, the same decoder."""
    return self._compress(image, quality, refine_steps)

  def _compress(self, image, quality, refine_steps=None):
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    checks = [
        tf.debugging.assert_greater_equal(tf.minimum(height, width), MIN_SIDE,
                                          message="image is empty"),
        tf.debugging.assert_less_equal(tf.maximum(height, width), MAX_SIDE,
                                       message=f"image side exceeds {MAX_SIDE}"),
    ]
    with tf.control_dependencies(checks):
      quality_code = tf.cast(tf.round(tf.clip_by_value(quality, 0.0, 1.0) *
                                      bitstream_format.QUALITY_STEPS), tf.int32)
    quality = tf.cast(quality_code, tf.float32) / bitstream_format.QUALITY_STEPS
    x = model_lib.pad_to_multiple(tf.cast(image, tf.float32)[None] / 255.0,
                                  model_lib.LATENT_STRIDE)
    y = self.model.analysis(x) * tf.exp(self.model.log_gain(quality))
    if refine_steps is not None:
      y = refinement.refine_latent(self.model, x, y, quality, refine_steps,
                                   height=height, width=width, distortion=self.distortion)
    y = tf.debugging.assert_all_finite(y, "the model produced non-finite latents")
    z = tf.clip_by_value(self.model.hyper_latent(y), -SYMBOL_LIMIT, SYMBOL_LIMIT)
    z = tf.debugging.assert_all_finite(z, "the model produced non-finite hyper-latents")
    z_stream = self.hyper_model.compress(z)[0]
    z_hat = self.hyper_model.quantize(z)
    hyper = self.model.hyper_features(z_hat, tf.shape(y)[1], tf.shape(y)[2])
    k = self.model.config.num_groups
    cdf_offset = self.latent_model.cdf_offset

    def encode_step(handle, positions, group, mean, log_scale):
      mean = tf.debugging.assert_all_finite(mean, "the context model produced NaN/Inf")
      values = context_model.gather_group(y, positions, group, k) - mean
      symbols = tf.cast(tf.clip_by_value(tf.round(values), -SYMBOL_LIMIT, SYMBOL_LIMIT),
                        tf.int32)
      indexes = tf.cast(self.model.scale_index(log_scale), tf.int32)
      handle = tfc.entropy_encode_index(handle, indexes,
                                        symbols - tf.gather(cdf_offset, indexes))
      return handle, tf.cast(symbols, tf.float32) + mean

    handle = tfc.create_range_encoder([], self.latent_model.cdf)
    _, handle = context_model.coding_loop(self.model.context, hyper, tf.shape(y),
                                          encode_step, handle)
    y_stream = tfc.entropy_encode_finalize(handle)

    head = tf.strings.join([
        tf.constant(bitstream_format.MAGIC),
        _to_bytes([bitstream_format.VERSION, self.mode_flag], tf.uint8),
        self.fingerprint,
        _to_bytes(tf.stack([height, width, quality_code]), tf.uint16),
        _to_bytes(tf.stack([tf.strings.length(z_stream), tf.strings.length(y_stream)]),
                  tf.uint32),
    ])
    checksum = adler32(tf.strings.join([head, z_stream, y_stream]))
    return tf.strings.join([head, _to_bytes(checksum, tf.uint32), z_stream, y_stream])

  @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
  def decompress(self, bitstream):
    """A .tflic file (string) -> uint8 image [H, W, 3]. Fails on any invalid file."""
    y_hat, quality, height, width = self._decode(bitstream)
    x_hat = self.model.synthesize(y_hat, self.model.log_gain(quality))[0, :height, :width]
    return tf.cast(tf.round(tf.clip_by_value(x_hat * 255.0, 0.0, 255.0)), tf.uint8)

  @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
  def decode_latent(self, bitstream):
    """The decoded latent y_hat [1, h, w, M] of a .tflic file (for tests and analysis)."""
    return self._decode(bitstream)[0]

  def _decode(self, data):
    """Checks a file and decodes its streams: (y_hat, quality, height, width)."""
    size = tf.strings.length(data)
    tf.debugging.assert_greater_equal(size, bitstream_format.HEADER_SIZE,
                                      message="not a tflic file: too short")
    head = tf.io.decode_raw(tf.strings.substr(data, 0, bitstream_format.HEADER_SIZE), tf.uint8)
    field = lambda start, length: _from_bytes(head[start:start + length])
    height, width = tf.cast(field(14, 2), tf.int32), tf.cast(field(16, 2), tf.int32)
    z_bytes, y_bytes = tf.cast(field(20, 4), tf.int32), tf.cast(field(24, 4), tf.int32)
    body = tf.strings.substr(data, bitstream_format.HEADER_SIZE, size)
    checks = [
        tf.debugging.assert_equal(field(0, 4), _from_bytes(
            tf.io.decode_raw(bitstream_format.MAGIC, tf.uint8)),
                                  message="not a tflic file (bad magic bytes)"),
        tf.debugging.assert_equal(field(4, 1), tf.constant(bitstream_format.VERSION, tf.int64),
                                  message="unsupported tflic format version"),
        # Compared as numbers: a failed string assert would print raw bytes.
        tf.debugging.assert_equal(
            field(6, 8), _from_bytes(tf.io.decode_raw(self.fingerprint, tf.uint8)),
            message="bitstream was written with a different model"),
        tf.debugging.assert_equal(tf.cast(field(5, 1), tf.int32), self.mode_flag,
                                  message="bitstream decoding mode differs from the model's"),
        tf.debugging.assert_equal(size, bitstream_format.HEADER_SIZE + z_bytes + y_bytes,
                                  message="corrupt tflic file: wrong length"),
        tf.debugging.assert_equal(
            adler32(tf.strings.join([tf.strings.substr(data, 0, _HEADER_WITHOUT_CHECKSUM),
                                     body])), field(28, 4),
            message="corrupt tflic file: checksum mismatch"),
        tf.debugging.assert_positive(tf.minimum(height, width),
                                     message="corrupt tflic file: zero image size"),
    ]
    with tf.control_dependencies(checks):
      z_stream = tf.strings.substr(body, 0, z_bytes)
      y_stream = tf.strings.substr(body, z_bytes, y_bytes)
    quality = tf.cast(field(18, 2), tf.float32) / bitstream_format.QUALITY_STEPS
    latent_height, latent_width = self._latent_shape(height, width)
    stride = model_lib.HYPER_STRIDE
    z_hat = self.hyper_model.decompress(
        z_stream[None], [(latent_height + stride - 1) // stride,
                         (latent_width + stride - 1) // stride])
    hyper = self.model.hyper_features(z_hat, latent_height, latent_width)
    cdf_offset = self.latent_model.cdf_offset

    def decode_step(handle, positions, group, mean, log_scale):
      del positions, group
      indexes = tf.cast(self.model.scale_index(log_scale), tf.int32)
      handle, symbols = tfc.entropy_decode_index(handle, indexes, tf.shape(indexes),
                                                 tf.int32)
      symbols += tf.gather(cdf_offset, indexes)
      return handle, tf.cast(symbols, tf.float32) + mean

    latent_shape = tf.stack([1, latent_height, latent_width,
                             self.model.config.latent_channels])
    handle = tfc.create_range_decoder(y_stream, self.latent_model.cdf)
    y_hat, handle = context_model.coding_loop(self.model.context, hyper, latent_shape,
                                              decode_step, handle)
    complete = tfc.entropy_decode_finalize(handle)
    with tf.control_dependencies([tf.debugging.assert_equal(
        complete, True, message="corrupt tflic file: y stream ends early")]):
      return tf.identity(y_hat), quality, height, width


class Codec:
  """Python face of a codec module: numpy images, bytes, one-line errors."""

  def __init__(self, module):
    self.module = module
    self.fingerprint = module.fingerprint.numpy()
    flags = {v: k for k, v in bitstream_format.MODE_FLAGS.items()}
    self.mode = flags[int(module.mode_flag.numpy())]

  def compress(self, image, quality, refine_steps=0):
    """uint8 [H, W, 3] and quality in [0, 1] -> .tflic file bytes.

    refine_steps > 0 refines the latent for this image first (tflic.refinement).
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
      raise errors.TflicError(f"expected a uint8 RGB image, got {image.dtype} "
                              f"{image.shape}")
    if min(image.shape[:2]) < MIN_SIDE or max(image.shape[:2]) > MAX_SIDE:
      raise errors.TflicError(f"image size {image.shape[1]}x{image.shape[0]} is outside "
                              f"{MIN_SIDE}..{MAX_SIDE} pixels per side")
    bitstream_format.quantize_quality(quality)  # validates the range
    if refine_steps < 0:
      raise errors.TflicError(f"refine_steps must be >= 0, got {refine_steps}")
    if refine_steps and not hasattr(self.module, "compress_refined"):
      raise errors.TflicError("this model was exported without compress_refined; "
                              "re-export it to use latent refinement")
    try:
      if refine_steps:
        return self.module.compress_refined(tf.constant(image),
                                            tf.constant(quality, tf.float32),
                                            tf.constant(refine_steps, tf.int32)).numpy()
      return self.module.compress(tf.constant(image), tf.constant(quality, tf.float32)
                                  ).numpy()
    except tf.errors.OpError as e:
      raise errors.TflicError(f"compression failed: {_first_line(e)}") from None

  def decompress(self, data):
    """.tflic file bytes -> uint8 [H, W, 3]."""
    header, _, _ = bitstream_format.unpack(data)
    if header.fingerprint != self.fingerprint:
      raise errors.TflicError(
          f"bitstream was written with a different model (fingerprint "
          f"{header.fingerprint.hex()}, this model {self.fingerprint.hex()})")
    if header.mode != self.mode:
      raise errors.TflicError(f"bitstream was coded in {header.mode} order; this model "
                              f"decodes {self.mode}")
    try:
      return self.module.decompress(tf.constant(data)).numpy()
    except tf.errors.OpError as e:
      raise errors.TflicError(f"decoding failed: {_first_line(e)}") from None


def _first_line(error):
  """The line of a TF error that says what failed (not where)."""
  message = getattr(error, "message", str(error))
  lines = [l.strip() for l in message.splitlines()]
  for line in reversed(lines):
    if line.startswith("assertion failed: ["):
      return line[len("assertion failed: ["):].split("]", 1)[0]
  for line in reversed(lines):
    if line and not line.startswith(("[[", "File ", "Detected at node", "Graph execution")):
      return line
  return type(error).__name__


def is_saved_model(path):
  """True for a directory holding a SavedModel."""
  return os.path.isfile(os.path.join(path, "saved_model.pb"))


def load(path):
  """A Codec from an exported SavedModel directory or a training directory."""
  from tflic import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(path):
    raise errors.TflicError(f"model not found: {path}")
  if is_saved_model(path):
    try:
      return Codec(tf.saved_model.load(path))
    except (OSError, ValueError, tf.errors.OpError) as e:
      raise errors.TflicError(f"cannot load SavedModel {path}: {_first_line(e)}") from None
  cfg, model, _ = checkpoint_lib.restore_model(path)
  return Codec(CodecModule(model, cfg.to_json(), distortion=cfg.train.distortion))


def default_model_path():
  """The model bundled with the package."""
  path = os.path.join(os.path.dirname(__file__), "bundled", "model")
  if not is_saved_model(path):
    raise errors.TflicError("no bundled model in this installation; pass --model=PATH")
  return path
