"""The codec: real .tflic files from a trained model, range coding inside the TF graph.

`CodecModule` is a tf.Module with two tf.functions, `compress(uint8 image, quality) ->
string` and `decompress(string) -> uint8 image`, that read and write the whole file
(header, checksums, z and y streams; see docs/bitstream.md) with TF and
tflic's ops (`tflic.codec.rangecoder.tf_ops`), so an exported SavedModel needs no tflic Python
code. All chunks of y go into one range-coded stream, chunk step by chunk step in coding
order, coded by one op each way (`core_encode` / `core_decode`).

Bitstream v2 splits the model in two. The analysis, hyper analysis and synthesis run in
float32 and may drift between runtimes by a pixel level now and then. Everything that
chooses a coding table or feeds the context (z's dequantization, h_s, the context
transformer, the table index) is the integer entropy model, exact on any runtime, device
and thread count: the C core `tflic/codec/rangecoder/entropy_core.c` (with the coding loop and
the range coder) runs it, from the integer parameters `tflic.codec.deterministic.quantize`
makes; `tflic.codec.deterministic`'s numpy model is its readable reference. The coding tables are computed once per
checkpoint and stored (`tflic.codec.deterministic.tables`); the file carries a check of the
decoded latents, so a decoder that drifted anyway stops with an error instead of
returning a wrong image.

`Codec` wraps a CodecModule (or a loaded SavedModel) for Python callers: numpy in and
out, bitstream checks with clear messages (`tflic.errors.TflicError`). It codes large
images with the transforms in overlapping tiles (`tflic.codec.tiling`), through the module's
`analyse_tile` and `compress_latent`, `decode_latent` and `synthesize_tile`: the latent
and the coding stay whole, so the files are those of `compress`. A module with
`hyper_analysis` (exported since it was added, or built from a training directory) lets
it code a tiled image's latents with the C core's Python binding instead of
`compress_latent`: the same bytes, with the coding loop's progress.
"""

import hashlib
import json
import os

import numpy as np
import tensorflow as tf

import tflic
from tflic.codec import bitstream as bitstream_format
from tflic.codec.deterministic import entropy_model as integer_model
from tflic.codec.deterministic import reference
from tflic.codec.deterministic import tables as tables_lib
from tflic.codec import image_io
from tflic.codec.rangecoder import entropy_core
from tflic.codec.rangecoder import tf_ops as range_coder
from tflic.codec import refinement
from tflic.codec import tiling
from tflic import config
from tflic import errors
from tflic.model import tflic_model as model_lib

MIN_SIDE = bitstream_format.MIN_SIDE
MAX_SIDE = bitstream_format.MAX_SIDE
# Symbols beyond this are clamped: tfc's range coder loops forever near +-2^30.
SYMBOL_LIMIT = 1 << 20
_ADLER_MOD = 65521
_ONE = float(integer_model.ONE)  # fixed point: integer latents are value * 2^ACT_BITS
DESYNC_MESSAGE = bitstream_format.DESYNC_MESSAGE


def _bytes_table():
  return tf.constant([bytes([i]) for i in range(256)])


def _to_bytes(values, dtype):
  """Little-endian bytes of integer `values` as a scalar string."""
  raw = tf.reshape(tf.bitcast(tf.cast(values, dtype), tf.uint8), [-1])
  return tf.strings.reduce_join(tf.gather(_bytes_table(), tf.cast(raw, tf.int32)))


def _from_bytes(raw):
  """Unsigned little-endian integer (int64, wrapping at 2^64) from uint8 bytes."""
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


def weights_fingerprint(arrays):
  """First 8 bytes of the SHA-256 of the arrays' shapes and values, in order.

  Names are left out: Keras numbers unnamed layers per process, so they are not stable.
  """
  digest = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(a.numpy() if hasattr(a, "numpy") else a)
    digest.update(str(list(a.shape)).encode())
    digest.update(a.tobytes())
  return digest.digest()[:8]


def _variable_name(key):
  return key.replace("/", ".")


def _compact(values):
  """int32 for integer arrays that fit (half the size of float64), else float64."""
  values = np.asarray(values, np.float64)
  if np.all(np.abs(values) < 2**31) and np.array_equal(values, np.round(values)):
    return values.astype(np.int32)
  return values


def analyse(model, image, quality, max_pixels=None):
  """The encoder's float half: (padded image x, gained latent y, quality code, stored
  quality) of a uint8 image [H, W, 3] at a quality in [0, 1].

  The codec and the stock-op servable (export/serving.py) both run this, so the split
  encoder's latents are the codec's bit for bit. The size checks gate the work.
  """
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  checks = [
      (lambda: tf.minimum(height, width) >= MIN_SIDE, "image is empty"),
      (lambda: tf.maximum(height, width) <= MAX_SIDE, f"image side exceeds {MAX_SIDE}"),
  ]
  if max_pixels is not None:
    checks.append((lambda: tf.cast(height, tf.int64) * tf.cast(width, tf.int64) <= max_pixels,
                   "image exceeds the model's pixel limit (max_pixels at export)"))
  with tf.control_dependencies([_checks_in_order(checks)]):
    image = tf.identity(image)
    quality_code = tf.cast(tf.round(tf.clip_by_value(quality, 0.0, 1.0) *
                                    bitstream_format.QUALITY_STEPS), tf.int32)
  quality = tf.cast(quality_code, tf.float32) / bitstream_format.QUALITY_STEPS
  x = model_lib.pad_to_multiple(tf.cast(image, tf.float32)[None] / 255.0,
                                model_lib.LATENT_STRIDE)
  y = model.analysis(x) * tf.exp(model.log_gain(quality))
  return x, y, quality_code, quality


class CodecModule(tf.Module):
  """compress / decompress tf.functions around a trained TflicModel.

  Args:
    model: a trained `TflicModel`.
    config_json: the model's config, stored with the module for provenance.
    mode: decoding order; must match the mask the model was trained with (None: the
      model's own).
    distortion: what the model was trained for ("mse" or "ms-ssim"); latent refinement
      optimizes it.
    tables: the model's stored coding tables (`tflic.codec.deterministic.tables`); None
      computes them (for models that have never been stored).
    max_pixels: the largest image (height x width) the module codes; larger declared
      sizes are refused before any allocation.
    flip_index_at_step: for tests only: the decoder codes the first value of this step
      with another coding table, as a decoder whose entropy model drifted would.
  """

  def __init__(self, model, config_json="", mode=None, distortion="mse", tables=None,
               max_pixels=image_io.DEFAULT_MAX_PIXELS, flip_index_at_step=None,
               name="tflic_codec"):
    super().__init__(name=name)
    model = model.as_float32()  # e.g. a model training in bfloat16
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
    self._flip_index_at_step = flip_index_at_step
    self.model_variables = list(model.variables)
    if tables is None:
      tables = tables_lib.compute(model)
    libm = {k: tables[k] for k in tables_lib.LIBM_KEYS}
    arrays, self._integer_statics = integer_model.split_arrays(
        integer_model.integer_params(model, libm))
    self._array_keys = tuple(sorted(arrays))
    self.coding_tables = {k: tf.Variable(tables[k], trainable=False, name=k)
                          for k in tables_lib.KEYS if k not in libm}
    # Graph constants, not variables: they follow from the stored tables and the export.
    self.max_pixels = int(max_pixels)
    self._y_cost = bitstream_format.symbol_cost(tables["y_cdf"])
    self._z_cost = bitstream_format.symbol_cost(tables["z_cdf"])
    self.integer_params = {_variable_name(k): tf.Variable(_compact(v), trainable=False,
                                                          name=_variable_name(k))
                           for k, v in sorted(arrays.items())}
    self.mode_flag = tf.Variable(bitstream_format.MODE_FLAGS[trained_mode], trainable=False,
                                 dtype=tf.int32, name="mode_flag")
    self.fingerprint = tf.Variable(
        weights_fingerprint(list(model.weights) +
                            [tables[k] for k in tables_lib.KEYS] +
                            [arrays[k] for k in sorted(arrays)] +
                            [np.array(sorted(self._integer_statics.items()), str)]),
        trainable=False, name="fingerprint")
    self.config_json = tf.Variable(config_json, trainable=False, name="config_json")
    # What the coding ops read: the integer parameters and tables above as one blob.
    self.entropy_core_model = tf.Variable(entropy_core.model_blob(self.reference_arrays()),
                                          trainable=False, name="entropy_core_model")

  def reference_arrays(self):
    """The integer entropy model and coding tables as numpy arrays, for the TF-free
    implementation (`tflic.codec.deterministic.reference`)."""
    flat = dict(self._integer_statics)
    flat.update({k: self.integer_params[_variable_name(k)].numpy() for k in self._array_keys})
    tables = {k: v.numpy() for k, v in self.coding_tables.items()}
    return reference.export_arrays(flat, tables, self.model.config)

  def _latent_shape(self, height, width):
    stride = model_lib.LATENT_STRIDE
    return (height + stride - 1) // stride, (width + stride - 1) // stride

  def _entropy_encode(self, y):
    """(z_stream, y_stream, latent check, z_symbols, y_hat) of the gained latent y
    [1, h, w, M] (float32): z = h_a(y), then the C core's quantization, integer entropy
    model and range coding in one op (streams padded to the stream-length rule)."""
    return range_coder.core_encode(self.entropy_core_model, y, self.model.hyper_latent(y))

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
    tflic.codec.refinement): slower encoding, a smaller or better file, the same decoder."""
    return self._compress(image, quality, refine_steps)

  def _analyse(self, image, quality, refine_steps=None):
    """(padded image x, latent y, quality code, stored quality) of a uint8 image."""
    x, y, quality_code, quality = analyse(self.model, image, quality, self.max_pixels)
    if refine_steps is not None:
      y = refinement.refine_latent(self.model, x, y, quality, refine_steps,
                                   height=tf.shape(image)[0], width=tf.shape(image)[1],
                                   distortion=self.distortion)
    return x, y, quality_code, quality

  def _compress(self, image, quality, refine_steps=None):
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    _, y, quality_code, _ = self._analyse(image, quality, refine_steps)
    return self._write_file(y, height, width, quality_code)

  @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8),
                                tf.TensorSpec([], tf.float32)])
  def analyse_tile(self, tile, quality):
    """The gained latent [1, h / 16, w / 16, M] (float32) of one tile of an image padded
    to multiples of 16 (`tflic.codec.tiling`: uint8 [h, w, 3], h and w multiples of 16), at a
    quality in [0, 1]; the tiled encoder's first half (`compress_latent` the second)."""
    return analyse(self.model, tile, quality)[1]

  @tf.function(input_signature=[tf.TensorSpec([1, None, None, None], tf.float32),
                                tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32),
                                tf.TensorSpec([], tf.float32)])
  def compress_latent(self, y, height, width, quality):
    """The .tflic file of an image of height x width pixels from its gained latent y
    [1, ceil(height / 16), ceil(width / 16), M] (`analyse_tile`'s, assembled) at the
    quality it was analysed at: what `compress` writes after its analysis."""
    with tf.control_dependencies([self._latent_checks(y, height, width)]):
      y = tf.identity(y)
      quality_code = tf.cast(tf.round(tf.clip_by_value(quality, 0.0, 1.0) *
                                      bitstream_format.QUALITY_STEPS), tf.int32)
    return self._write_file(y, height, width, quality_code)

  @tf.function(input_signature=[tf.TensorSpec([1, None, None, None], tf.float32),
                                tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)])
  def hyper_analysis(self, y, height, width):
    """z = h_a(y) (float32 [1, ceil(h / 4), ceil(w / 4), C]) of the gained latent y of an
    image of height x width pixels, after `compress_latent`'s checks: with it a caller
    codes y and z with the C core (`tflic.codec.rangecoder.entropy_core`, from
    `entropy_core_model`) and writes the bytes `compress_latent` would (`Codec` does, to
    report the coding's progress)."""
    with tf.control_dependencies([self._latent_checks(y, height, width)]):
      y = tf.identity(y)
    return self.model.hyper_latent(y)

  def _latent_checks(self, y, height, width):
    """An op that fails unless the image size is codable and y's shape fits it."""
    latent_height, latent_width = self._latent_shape(height, width)
    shape = tf.shape(y)
    return _checks_in_order([
        (lambda: (tf.minimum(height, width) >= MIN_SIDE) &
         (tf.maximum(height, width) <= MAX_SIDE), f"image side outside 1..{MAX_SIDE}"),
        (lambda: tf.cast(height, tf.int64) * tf.cast(width, tf.int64) <= self.max_pixels,
         "image exceeds the model's pixel limit (max_pixels at export)"),
        (lambda: tf.reduce_all(tf.equal(shape[1:], tf.stack([
            latent_height, latent_width, self.model.config.latent_channels]))),
         "the latent's shape does not fit the image size"),
    ])

  def _write_file(self, y, height, width, quality_code):
    """The .tflic file of a gained latent y of an image of height x width pixels."""
    z_stream, y_stream, check, _, _ = self._entropy_encode(y)
    head = tf.strings.join([
        tf.constant(bitstream_format.MAGIC),
        _to_bytes([bitstream_format.VERSION, self.mode_flag], tf.uint8),
        self.fingerprint,
        _to_bytes(tf.stack([height, width, quality_code]), tf.uint16),
        _to_bytes(tf.stack([tf.strings.length(z_stream), tf.strings.length(y_stream)]),
                  tf.uint32),
        _to_bytes(check, tf.int64),
    ])
    checksum = adler32(tf.strings.join([head, z_stream, y_stream]))
    return tf.strings.join([head, _to_bytes(checksum, tf.uint32), z_stream, y_stream])

  def coded_forward(self, image, quality):
    """What `compress` computes, without writing bits (for tests and analysis).

    image: uint8 [H, W, 3]. Returns a dict with y (float32, gained), z_symbols, y_hat
    (the integer latent, float64) and x_hat [1, H', W', 3] (float32, padded size).
    """
    _, y, _, quality = self._analyse(image, quality)
    _, _, _, z_symbols, y_hat = self._entropy_encode(y)
    return dict(y=y, z_symbols=z_symbols, y_hat=y_hat,
                x_hat=self.synthesize_latent(y_hat, quality))

  def synthesize_latent(self, y_hat, quality):
    """The decoder's image [1, H', W', 3] (float32, padded size) of an integer latent."""
    return self.model.synthesize(tf.cast(y_hat / _ONE, tf.float32),
                                 self.model.log_gain(quality))

  @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
  def decompress(self, bitstream):
    """A .tflic file (string) -> uint8 image [H, W, 3]. Fails on any invalid file."""
    _, y_hat, quality, height, width = self._decode(bitstream)
    x_hat = self.synthesize_latent(y_hat, quality)[0, :height, :width]
    return tf.cast(tf.round(tf.clip_by_value(x_hat * 255.0, 0.0, 255.0)), tf.uint8)

  @tf.function(input_signature=[tf.TensorSpec([1, None, None, None], tf.float64),
                                tf.TensorSpec([], tf.int32)])
  def synthesize_tile(self, y_hat, quality_code):
    """The uint8 image [16h, 16w, 3] of one tile [1, h, w, M] of a decoded integer latent
    (`decode_latent`'s y_hat) at the file's quality code: the tiled decoder's second half,
    pixel for pixel what `decompress` computes on the tiles it keeps (`tflic.codec.tiling`)."""
    quality = tf.cast(quality_code, tf.float32) / bitstream_format.QUALITY_STEPS
    x_hat = self.synthesize_latent(y_hat, quality)[0]
    return tf.cast(tf.round(tf.clip_by_value(x_hat * 255.0, 0.0, 255.0)), tf.uint8)

  @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
  def decode_latent(self, bitstream):
    """The decoded latents of a .tflic file (for tests and analysis): a dict with
    z_symbols (int32 [1, hz, wz, C]) and y_hat (the integer latent [1, h, w, M],
    float64)."""
    z_symbols, y_hat = self._decode(bitstream)[:2]
    return {"z_symbols": z_symbols, "y_hat": y_hat}

  def _stream_symbols(self, height, width):
    """(z symbols, y symbols) of an image's streams, int64."""
    latent_height, latent_width = self._latent_shape(tf.cast(height, tf.int64),
                                                     tf.cast(width, tf.int64))
    stride = model_lib.HYPER_STRIDE
    hyper = ((latent_height + stride - 1) // stride) * ((latent_width + stride - 1) // stride)
    return (hyper * self.model.config.hyper_channels,
            latent_height * latent_width * self.model.config.latent_channels)

  def _checked_file(self, data):
    """(header fields, z stream, y stream) of a file, each available only once all of
    the file's checks have passed, one after the other: the cheap header checks first,
    then the checksum, then the declared size against --max_pixels and against what its
    streams can hold (`bitstream.stream_holds`). So a bad file costs a decoder no more
    than reading its header, and never an allocation for the size it declares."""
    layout = bitstream_format.FIELDS
    size = tf.cast(tf.strings.length(data), tf.int64)  # int64: the lengths are uint32
    head = tf.io.decode_raw(tf.strings.substr(data, 0, bitstream_format.HEADER_SIZE),
                            tf.uint8)
    fields = {name: _from_bytes(head[offset:offset + width])
              for name, (offset, width) in layout.items()}
    pixels = fields["height"] * fields["width"]
    z_symbols, y_symbols = self._stream_symbols(fields["height"], fields["width"])

    def holds(symbols, num_bytes, cost):
      d, precision = cost
      return symbols * d <= (num_bytes + bitstream_format.STREAM_SLACK_BYTES) * 2**(
          precision + 3)

    body = lambda: tf.strings.substr(data, bitstream_format.HEADER_SIZE, -1)
    done = _checks_in_order([
        (lambda: size >= bitstream_format.HEADER_SIZE,
         "not a tflic file: shorter than a header"),
        (lambda: tf.equal(fields["magic"], _from_bytes(
            tf.io.decode_raw(bitstream_format.MAGIC, tf.uint8))),
         "not a tflic file (bad magic bytes)"),
        (lambda: tf.equal(fields["version"], bitstream_format.VERSION),
         "unsupported tflic format version"),
        # Compared as numbers: a failed string assert would print raw bytes.
        (lambda: tf.equal(fields["fingerprint"],
                          _from_bytes(tf.io.decode_raw(self.fingerprint, tf.uint8))),
         "bitstream was written with a different model"),
        (lambda: tf.equal(tf.cast(fields["flags"], tf.int32), self.mode_flag),
         "bitstream decoding mode differs from the model's"),
        (lambda: tf.equal(size, bitstream_format.HEADER_SIZE + fields["z_bytes"] +
                          fields["y_bytes"]),
         "corrupt tflic file: wrong length"),
        (lambda: tf.equal(adler32(tf.strings.join([
            tf.strings.substr(data, 0, bitstream_format.CHECKSUM_OFFSET), body()])),
                          fields["checksum"]),
         "corrupt tflic file: checksum mismatch"),
        (lambda: pixels > 0, "corrupt tflic file: zero image size"),
        (lambda: pixels <= self.max_pixels,
         "image exceeds the model's pixel limit (max_pixels at export)"),
        (lambda: holds(z_symbols, fields["z_bytes"], self._z_cost) &
         holds(y_symbols, fields["y_bytes"], self._y_cost),
         "corrupt tflic file: its streams are too short for the image size it declares"),
    ])
    with tf.control_dependencies([done]):
      fields = {k: tf.identity(v) for k, v in fields.items()}
      for name in ("height", "width", "z_bytes", "y_bytes"):
        fields[name] = tf.cast(fields[name], tf.int32)
      body = body()
    z_stream = tf.strings.substr(body, 0, fields["z_bytes"])
    y_stream = tf.strings.substr(body, fields["z_bytes"], fields["y_bytes"])
    return fields, z_stream, y_stream

  def _decode(self, data):
    """Checks a file and decodes its streams: (z_symbols, y_hat, quality, height, width)."""
    fields, z_stream, y_stream = self._checked_file(data)
    height, width = fields["height"], fields["width"]
    quality = tf.cast(fields["quality"], tf.float32) / bitstream_format.QUALITY_STEPS
    flip = -1 if self._flip_index_at_step is None else int(self._flip_index_at_step)
    # The test hook `flip_index_at_step`: the first value of that step uses a table half
    # the scale range away, as a decoder whose entropy model drifted would.
    z_symbols, y_hat = range_coder.core_decode(
        self.entropy_core_model, z_stream, y_stream, height, width, fields["latent_check"],
        max_pixels=self.max_pixels, flip_step=flip)
    return z_symbols, y_hat, quality, height, width


class Codec:
  """Python face of a codec module: numpy images, bytes, one-line errors.

  Images larger than one tile (`tflic.codec.tiling`, sized from `tile_budget` bytes of
  activations) are analysed and synthesized tile by tile with the module's
  `analyse_tile` / `compress_latent` and `decode_latent` / `synthesize_tile`; the
  latent and the coding stay whole, so the files are the ones `compress` would write,
  up to float rounding in the transforms. Images that fit one tile, and modules exported
  without those functions, take the one-piece `compress` / `decompress`.

  Args:
    module: a CodecModule or a loaded SavedModel of one.
    tile_budget: bytes of transform activations a tile may take.
    tile_kept: for tests: the kept side of a tile in latents (a multiple of the model's
      alignment, `tiling.geometry`), instead of the budget's.
  """

  def __init__(self, module, tile_budget=tiling.DEFAULT_BUDGET_BYTES, tile_kept=None):
    self.module = module
    self.fingerprint = module.fingerprint.numpy()
    flags = {v: k for k, v in bitstream_format.MODE_FLAGS.items()}
    self.mode = flags[int(module.mode_flag.numpy())]
    self.tile_budget = tile_budget
    self.tile_kept = tile_kept
    self._core = None
    self._tiled = all(hasattr(module, name) for name in (
        "analyse_tile", "compress_latent", "decode_latent", "synthesize_tile"))
    self._model_config = None
    if self._tiled:
      stored = module.config_json.numpy().decode()
      if stored:
        self._model_config = json.loads(stored)["model"]
      elif hasattr(module, "model"):  # a CodecModule made without its config's JSON
        self._model_config = module.model.config
      else:
        self._tiled = False

  def plan(self, height, width):
    """The tiles (`tflic.codec.tiling.Tile`, latent units) of an image; one for an image that
    fits the budget, or when the module cannot tile."""
    if not self._tiled:
      return [tiling.single(height, width)]
    return tiling.plan(height, width, self._model_config, self.tile_budget, self.tile_kept)

  def compress(self, image, quality, refine_steps=0, progress=None):
    """uint8 [H, W, 3] and quality in [0, 1] -> .tflic file bytes.

    refine_steps > 0 refines the latent for this image first (tflic.codec.refinement), in one
    piece: only for images that fit one tile. progress: None or a callable (stage, done,
    total) called as the work advances (stages "analysis", "coding").
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
      raise errors.TflicError(f"expected a uint8 RGB image, got {image.dtype} "
                              f"{image.shape}")
    if min(image.shape[:2]) < MIN_SIDE or max(image.shape[:2]) > MAX_SIDE:
      raise errors.TflicError(f"image size {image.shape[1]}x{image.shape[0]} is outside "
                              f"{MIN_SIDE}..{MAX_SIDE} pixels per side")
    bitstream_format.quality_code(quality)  # validates the range
    if refine_steps < 0:
      raise errors.TflicError(f"refine_steps must be >= 0, got {refine_steps}")
    if refine_steps and not hasattr(self.module, "compress_refined"):
      raise errors.TflicError("this model was exported without compress_refined; "
                              "re-export it to use latent refinement")
    report = progress or (lambda stage, done, total: None)
    tiles = self.plan(*image.shape[:2])
    if refine_steps and len(tiles) > 1:
      # Refinement back-propagates through both transforms at once: many times a tile's
      # memory, on the whole image.
      raise errors.TflicError(
          f"latent refinement works on the whole image, and {image.shape[1]}x"
          f"{image.shape[0]} is larger than one tile of the memory budget; compress it "
          "without --refine_steps (or raise --tile_memory_mib)")
    try:
      if refine_steps:
        report("analysis", 0, 1)
        data = self.module.compress_refined(tf.constant(image),
                                            tf.constant(quality, tf.float32),
                                            tf.constant(refine_steps, tf.int32)).numpy()
      elif len(tiles) == 1:
        report("analysis", 0, 1)
        data = self.module.compress(tf.constant(image), tf.constant(quality, tf.float32)
                                    ).numpy()
      else:
        return self._compress_tiled(image, quality, tiles, report)
    except tf.errors.OpError as e:
      raise errors.TflicError(f"compression failed: {_first_line(e)}") from None
    report("coding", 1, 1)
    return data

  def _compress_tiled(self, image, quality, tiles, report):
    height, width = image.shape[:2]
    quality = tf.constant(quality, tf.float32)
    y = tiling.analyse_tiles(
        lambda pixels: self.module.analyse_tile(tf.constant(pixels), quality).numpy(),
        image, tiles, int(tiling.config_value(self._model_config, "latent_channels")),
        report)
    y = tf.constant(y)
    size = (tf.constant(height, tf.int32), tf.constant(width, tf.int32))
    if not hasattr(self.module, "hyper_analysis"):  # exported before it was added
      report("coding", 0, 1)
      data = self.module.compress_latent(y, *size, quality).numpy()
      report("coding", 1, 1)
      return data
    # compress_latent's coding, here: its op cannot call back with progress. The same C
    # core codes the same y and z, so the bytes are compress_latent's.
    z = self.module.hyper_analysis(y, *size).numpy()
    core = self._entropy_core()
    try:
      z_stream, y_stream, check, _ = core.encode(
          y.numpy(), z, progress=core.coding_progress(report, *y.shape[1:3]))
    except entropy_core.CoreError as e:
      raise errors.TflicError(f"compression failed: {e}") from None
    return bitstream_format.pack(self.mode, self.fingerprint, height, width,
                                 bitstream_format.quality_code(float(quality.numpy())),
                                 z_stream, y_stream, check)

  def _entropy_core(self):
    """The C core of the module's integer entropy model (its `entropy_core_model` blob),
    made once."""
    if self._core is None:
      self._core = entropy_core.Core(self.module.entropy_core_model.numpy())
    return self._core

  def decompress(self, data, max_pixels=None, progress=None):
    """.tflic file bytes -> uint8 [H, W, 3]; TflicError for a file declaring more than
    max_pixels pixels (None: the model's own limit, set at export). progress: as in
    `compress` (stages "coding", "synthesis")."""
    header, _, _ = bitstream_format.unpack(data)
    bitstream_format.check_model(header, self.fingerprint, self.mode)
    if max_pixels is not None and header.height * header.width > max_pixels:
      raise errors.TflicError(f"image of {header.width}x{header.height} pixels exceeds "
                              f"the limit of {max_pixels} (--max_pixels)")
    report = progress or (lambda stage, done, total: None)
    tiles = self.plan(header.height, header.width)
    report("coding", 0, 1)
    try:
      if len(tiles) == 1:
        image = self.module.decompress(tf.constant(data)).numpy()
        report("synthesis", 1, 1)
        return image
      y_hat = self.module.decode_latent(tf.constant(data))["y_hat"].numpy()
      report("coding", 1, 1)
      quality_code = tf.constant(header.quality_code, tf.int32)
      return tiling.synthesize_tiles(
          lambda latent: self.module.synthesize_tile(tf.constant(latent),
                                                     quality_code).numpy(),
          y_hat, tiles, header.height, header.width, report)
    except tf.errors.OpError as e:
      raise errors.TflicError(f"decoding failed: {_first_line(e)}") from None


def _checks_in_order(checks):
  """An op that runs (condition_fn, message) checks one after the other and fails with
  the first failing check's message; each condition is built (and so computed) only
  after the previous checks passed."""
  done = tf.no_op()
  for condition, message in checks:
    with tf.control_dependencies([done]):
      done = tf.debugging.Assert(condition(), [message])
  return done


def _first_line(error):
  """The line of a TF error that says what failed (not where)."""
  message = getattr(error, "message", str(error))
  lines = [l.strip() for l in message.splitlines()]
  for line in reversed(lines):
    if line.startswith("assertion failed: ["):
      # TF prints string data as Python literals: undo the quote escapes.
      return line[len("assertion failed: ["):].split("]", 1)[0].replace("\\'", "'")
  for line in reversed(lines):
    if line and not line.startswith(("[[", "File ", "Detected at node", "Graph execution")):
      return line
  return type(error).__name__


def is_saved_model(path):
  """True for a directory holding a SavedModel."""
  return os.path.isfile(os.path.join(path, "saved_model.pb"))


def module_from_workdir(workdir, average=False):
  """(CodecModule, step) of a training directory's latest checkpoint (its weights, or with
  `average` their moving average), with its stored coding tables (made and stored beside
  the checkpoint on first use)."""
  from tflic.model import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  cfg, model, step = checkpoint_lib.restore_model(workdir, average=average)
  prefix = checkpoint_lib.latest_checkpoint(workdir)
  # The tables follow from the weights: the average's are stored apart.
  prefix += "." + checkpoint_lib.AVERAGE if average else ""
  tables = tables_lib.load_or_create(prefix, model)
  module = CodecModule(model, cfg.to_json(), distortion=cfg.train.distortion, tables=tables)
  return module, step


def load(path, tile_budget=tiling.DEFAULT_BUDGET_BYTES):
  """A Codec from an exported SavedModel directory or a training directory, tiling
  images whose transforms would take more than `tile_budget` bytes."""
  if not os.path.isdir(path):
    raise errors.TflicError(f"model not found: {path}")
  if is_saved_model(path):
    try:
      module = tf.saved_model.load(path)
    except (OSError, ValueError, tf.errors.OpError) as e:
      raise errors.TflicError(f"cannot load SavedModel {path}: {_first_line(e)}") from None
    return Codec(module, tile_budget=tile_budget)
  return Codec(module_from_workdir(path)[0], tile_budget=tile_budget)


def default_model_path():
  """The model bundled with the package."""
  path = os.path.join(tflic.BUNDLED_DIR, "model")
  if not is_saved_model(path):
    raise errors.TflicError("no bundled model in this installation; pass --model=PATH")
  return path
