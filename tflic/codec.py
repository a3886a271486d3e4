"""The codec: real .tflic files from a trained model, range coding inside the TF graph.

`CodecModule` is a tf.Module with two tf.functions, `compress(uint8 image, quality) ->
string` and `decompress(string) -> uint8 image`, that read and write the whole file
(header, checksums, z and y streams; see docs/bitstream.md) with TF and
tensorflow-compression ops only, so an exported SavedModel needs no tflic code. All chunks
of y go into one range-coded stream, chunk step by chunk step in coding order
(`context_model.coding_loop`).

Bitstream v2 splits the model in two. The analysis, hyper analysis and synthesis run in
float32 and may drift between runtimes by a pixel level now and then. Everything that
chooses a coding table or feeds the context (z's dequantization, h_s, the context
transformer, the table index) is the integer entropy model of `tflic.deterministic`,
exact on any runtime, device and thread count. The coding tables are computed once per
checkpoint and stored (`tflic.deterministic.tables`); the file carries a check of the
decoded latents, so a decoder that drifted anyway stops with an error instead of
returning a wrong image.

`Codec` wraps a CodecModule (or a loaded SavedModel) for Python callers: numpy in and
out, bitstream checks with clear messages (`tflic.errors.TflicError`).
"""

import hashlib
import os

import numpy as np
import tensorflow as tf

from tflic import bitstream as bitstream_format
from tflic import coding_order
from tflic import config
from tflic import context_model
from tflic import errors
from tflic import image_io
from tflic import model as model_lib
from tflic import refinement
from tflic.rangecoder import tf_ops as range_coder
from tflic.deterministic import entropy_model as integer_model
from tflic.deterministic import latent_check
from tflic.deterministic import ops as ops_lib
from tflic.deterministic import reference
from tflic.deterministic import tables as tables_lib

MIN_SIDE = 1
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
    tables: the model's stored coding tables (`tflic.deterministic.tables`); None
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

  def reference_arrays(self):
    """The integer entropy model and coding tables as numpy arrays, for the TF-free
    implementation (`tflic.deterministic.reference`)."""
    flat = dict(self._integer_statics)
    flat.update({k: self.integer_params[_variable_name(k)].numpy() for k in self._array_keys})
    tables = {k: v.numpy() for k, v in self.coding_tables.items()}
    return reference.export_arrays(flat, tables, self.model.config)

  def _integer_model(self):
    """The integer entropy model on the TF backend, reading this module's variables."""
    flat = dict(self._integer_statics)
    flat.update({k: tf.cast(self.integer_params[_variable_name(k)], tf.float64)
                 for k in self._array_keys})
    entropy = integer_model.IntegerEntropyModel(
        ops_lib.tf_ops(), integer_model.unflatten(flat), self.model.config.context_window,
        self.model.config.num_groups, self.model.context.mode)
    # The integer networks have no data-dependent Python control flow: autograph need not
    # convert them, which saves a fifth of the codec's tracing time.
    for method in ("hyper_features", "predict", "table_index"):
      setattr(entropy, method, tf.autograph.experimental.do_not_convert(getattr(entropy, method)))
    return entropy

  def _latent_shape(self, height, width):
    stride = model_lib.LATENT_STRIDE
    return (height + stride - 1) // stride, (width + stride - 1) // stride

  def _predictor(self, entropy, hyper, latent_height, latent_width):
    """The context model's `predict` for `context_model.coding_loop`."""
    k, window = self.model.config.num_groups, self.model.config.context_window

    def predict(y_hat, positions, groups):
      mask = coding_order.context_mask(latent_height, latent_width, k, window,
                                       self.model.context.mode, positions, groups)
      mask = tf.concat([mask, tf.ones_like(mask[:, :, :1])], axis=-1)  # hyper always visible
      return entropy.predict(y_hat, hyper, positions, groups, mask)
    return predict

  def _z_hat(self, z_symbols):
    """Integer z_hat [1, hz, wz, C] from z's symbols."""
    return tf.cast(z_symbols, tf.float64) * _ONE + self.coding_tables["z_offset"]

  def _quantize(self, y, step_fn, state):
    """The encoder's integer quantization of the latent y [1, h, w, M] (float32).

    Returns z's symbols [1, hz, wz, C], y_hat (integers) [1, h, w, M] and the state
    `step_fn(state, indexes, symbols)` threaded through the coding steps (e.g. a range
    encoder).
    """
    y = tf.debugging.assert_all_finite(y, "the model produced non-finite latents")
    z = tf.clip_by_value(self.model.hyper_latent(y), -SYMBOL_LIMIT, SYMBOL_LIMIT)
    z = tf.debugging.assert_all_finite(z, "the model produced non-finite hyper-latents")
    z_symbols = tf.cast(tf.round(tf.cast(z, tf.float64) -
                                 self.coding_tables["z_offset"] / _ONE), tf.int32)
    entropy = self._integer_model()
    height, width = tf.shape(y)[1], tf.shape(y)[2]
    hyper = entropy.hyper_features(self._z_hat(z_symbols), height, width)
    k = self.model.config.num_groups
    y = tf.cast(y, tf.float64)

    def quantize_step(state, positions, group, mean, log_scale):
      values = context_model.gather_group(y, positions, group, k) - mean / _ONE
      symbols = tf.clip_by_value(tf.round(values), -SYMBOL_LIMIT, SYMBOL_LIMIT)
      state = step_fn(state, tf.cast(entropy.table_index(log_scale), tf.int32),
                      tf.cast(symbols, tf.int32))
      return state, symbols * _ONE + mean

    y_hat, state = context_model.coding_loop(
        self._predictor(entropy, hyper, height, width),
        [1, height, width, self.model.config.latent_channels], k, self.model.context.mode,
        quantize_step, state, dtype=tf.float64)
    return z_symbols, y_hat, state

  def _z_channels(self, num_positions):
    """z's table rows: the channel of each symbol, [n, C]."""
    channels = self.model.config.hyper_channels
    return tf.broadcast_to(tf.range(channels), tf.stack([num_positions, channels]))

  def _encode_z(self, z_symbols):
    channels = self.model.config.hyper_channels
    values = tf.reshape(z_symbols, [-1, channels]) - self.coding_tables["z_cdf_offset"]
    return range_coder.encode(self._z_channels(tf.shape(values)[0]), values,
                              self.coding_tables["z_cdf"], what="z stream")

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
    y_cdf_offset = self.coding_tables["y_cdf_offset"]

    # y is range coded in one call after the loop: the steps' table rows and values are
    # collected in coding order.
    def collect(state, indexes, symbols):
      rows, values, step = state
      values = values.write(step, tf.reshape(symbols - tf.gather(y_cdf_offset, indexes), [-1]))
      return rows.write(step, tf.reshape(indexes, [-1])), values, step + 1

    collected = lambda: tf.TensorArray(tf.int32, size=0, dynamic_size=True,
                                       infer_shape=False, element_shape=[None])
    z_symbols, y_hat, (rows, values, _) = self._quantize(
        y, collect, (collected(), collected(), tf.constant(0)))
    z_count, y_count = self._stream_symbols(height, width)
    z_stream = _padded(self._encode_z(z_symbols), z_count, self._z_cost)
    y_stream = _padded(range_coder.encode(rows.concat(), values.concat(),
                                          self.coding_tables["y_cdf"], what="y stream"),
                       y_count, self._y_cost)
    head = tf.strings.join([
        tf.constant(bitstream_format.MAGIC),
        _to_bytes([bitstream_format.VERSION, self.mode_flag], tf.uint8),
        self.fingerprint,
        _to_bytes(tf.stack([height, width, quality_code]), tf.uint16),
        _to_bytes(tf.stack([tf.strings.length(z_stream), tf.strings.length(y_stream)]),
                  tf.uint32),
        _to_bytes(latent_check.tf_check(z_symbols, y_hat), tf.int64),
    ])
    checksum = adler32(tf.strings.join([head, z_stream, y_stream]))
    return tf.strings.join([head, _to_bytes(checksum, tf.uint32), z_stream, y_stream])

  def coded_forward(self, image, quality):
    """What `compress` computes, without writing bits (for tests and analysis).

    image: uint8 [H, W, 3]. Returns a dict with y (float32, gained), z_symbols, y_hat
    (the integer latent, float64) and x_hat [1, H', W', 3] (float32, padded size).
    """
    _, y, _, quality = self._analyse(image, quality)
    z_symbols, y_hat, _ = self._quantize(y, lambda state, *_: state, ())
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
    latent_height, latent_width = self._latent_shape(height, width)
    stride = model_lib.HYPER_STRIDE
    z_shape = [(latent_height + stride - 1) // stride, (latent_width + stride - 1) // stride]
    channels = self.model.config.hyper_channels
    z_state, z_symbols = range_coder.decode(
        z_stream, range_coder.decoder_start(z_stream), self._z_channels(z_shape[0] * z_shape[1]),
        self.coding_tables["z_cdf"], what="z stream")
    with tf.control_dependencies([tf.debugging.Assert(
        range_coder.decoder_finish(z_stream, z_state),
        ["corrupt tflic file: z stream ends early"])]):
      z_symbols = tf.reshape(z_symbols + self.coding_tables["z_cdf_offset"],
                             tf.stack([1, z_shape[0], z_shape[1], channels]))
    entropy = self._integer_model()
    hyper = entropy.hyper_features(self._z_hat(z_symbols), latent_height, latent_width)
    y_cdf_offset = self.coding_tables["y_cdf_offset"]
    def decode_step(state, positions, group, mean, log_scale):
      del positions, group
      decoder, step = state
      indexes = tf.cast(entropy.table_index(log_scale), tf.int32)
      if self._flip_index_at_step is not None:
        # The test hook: the first value of one step uses a table half the scale range
        # away (neighbouring tables of the smallest scales can quantize to the same CDF,
        # which would not drift at all).
        flip = tf.scatter_nd(
            [[0, 0, 0]], [tf.cast(tf.equal(step, self._flip_index_at_step), tf.int32)],
            tf.shape(indexes))
        num_scales = self.model.config.num_scales
        indexes = (indexes + flip * (num_scales // 2)) % num_scales
      decoder, symbols = range_coder.decode(y_stream, decoder, indexes,
                                            self.coding_tables["y_cdf"], what="y stream")
      symbols += tf.gather(y_cdf_offset, indexes)
      return (decoder, step + 1), tf.cast(symbols, tf.float64) * _ONE + mean

    latent_shape = [1, latent_height, latent_width, self.model.config.latent_channels]
    y_hat, (decoder, _) = context_model.coding_loop(
        self._predictor(entropy, hyper, latent_height, latent_width), latent_shape,
        self.model.config.num_groups, self.model.context.mode, decode_step,
        (range_coder.decoder_start(y_stream), tf.constant(0)), dtype=tf.float64)
    # The check first: after a desync the stream usually also ends early or late.
    in_sync = tf.debugging.assert_equal(latent_check.tf_check(z_symbols, y_hat),
                                        fields["latent_check"], message=DESYNC_MESSAGE)
    with tf.control_dependencies([in_sync]):
      complete = range_coder.decoder_finish(y_stream, decoder)
    with tf.control_dependencies([tf.debugging.Assert(
        complete, ["corrupt tflic file: y stream ends early"])]):
      return tf.identity(z_symbols), tf.identity(y_hat), quality, height, width


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

  def decompress(self, data, max_pixels=None):
    """.tflic file bytes -> uint8 [H, W, 3]; TflicError for a file declaring more than
    max_pixels pixels (None: the model's own limit, set at export)."""
    header, _, _ = bitstream_format.unpack(data)
    bitstream_format.check_model(header, self.fingerprint, self.mode)
    if max_pixels is not None and header.height * header.width > max_pixels:
      raise errors.TflicError(f"image of {header.width}x{header.height} pixels exceeds "
                              f"the limit of {max_pixels} (--max_pixels)")
    try:
      return self.module.decompress(tf.constant(data)).numpy()
    except tf.errors.OpError as e:
      raise errors.TflicError(f"decoding failed: {_first_line(e)}") from None


def _padded(stream, num_symbols, cost):
  """A stream padded with zero bytes to `bitstream.min_stream_bytes`: the same symbols
  (a decoder reads zeros past the end), and a length that passes the decoder's check."""
  d, precision = cost
  missing = ((num_symbols * d + 2**(precision + 3) - 1) // 2**(precision + 3) -
             bitstream_format.STREAM_SLACK_BYTES - tf.cast(tf.strings.length(stream), tf.int64))
  zeros = tf.fill([tf.maximum(missing, 0)], "\x00")
  return tf.strings.join([stream, tf.strings.reduce_join(zeros)])


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
  from tflic import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  cfg, model, step = checkpoint_lib.restore_model(workdir, average=average)
  prefix = checkpoint_lib.latest_checkpoint(workdir)
  # The tables follow from the weights: the average's are stored apart.
  prefix += "." + checkpoint_lib.AVERAGE if average else ""
  tables = tables_lib.load_or_create(prefix, model)
  module = CodecModule(model, cfg.to_json(), distortion=cfg.train.distortion, tables=tables)
  return module, step


def load(path):
  """A Codec from an exported SavedModel directory or a training directory."""
  if not os.path.isdir(path):
    raise errors.TflicError(f"model not found: {path}")
  if is_saved_model(path):
    try:
      return Codec(tf.saved_model.load(path))
    except (OSError, ValueError, tf.errors.OpError) as e:
      raise errors.TflicError(f"cannot load SavedModel {path}: {_first_line(e)}") from None
  return Codec(module_from_workdir(path)[0])


def default_model_path():
  """The model bundled with the package."""
  path = os.path.join(os.path.dirname(__file__), "bundled", "model")
  if not is_saved_model(path):
    raise errors.TflicError("no bundled model in this installation; pass --model=PATH")
  return path
