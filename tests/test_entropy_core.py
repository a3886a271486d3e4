"""The C entropy core (tflic/codec/rangecoder/entropy_core.c) against the numpy reference.

The numpy implementation (`tflic.codec.deterministic`, `tflic.codec.deterministic.coding_loop`) is the
readable specification: the C core must give the same integers, streams and checks, on
the Swin and the CNN hyper synthesis, in wavefront and serial order, and refuse
malformed models and streams with one-line errors.
"""

import json
import pathlib
import shutil
import struct
import subprocess
import zlib

import numpy as np
import pytest
import tensorflow as tf

from tflic.codec import bitstream
from tflic.codec.deterministic import coding_loop
from tflic.codec.deterministic import entropy_model
from tflic.codec.deterministic import reference
from tflic.codec.deterministic import tables as tables_lib
from tflic.codec import image_io
from tflic.codec.rangecoder import entropy_core
from tflic.codec import tf_codec
from tflic import config
from tflic.model import checkpoint

REPO = pathlib.Path(__file__).resolve().parents[1]
# (height, width) crops: whole hyper cells, ragged ones, a single latent row.
SIZES = [(64, 96), (40, 136), (16, 300)]


@pytest.fixture(scope="module")
def photo(kodak_dir):
  return image_io.read_image(kodak_dir / "kodim23.png")


def _latents(module):
  """(image, quality) -> (y, z) as the codec's analysis computes them (float32)."""
  analyse = tf.function(lambda image, quality: tf_codec.analyse(module.model, image, quality)[1])

  def latents(image, quality):
    y = analyse(tf.constant(image), tf.constant(quality, tf.float32))
    return y.numpy(), module.model.hyper_latent(y).numpy()
  return latents


def _check_against_numpy(arrays, latents, photo):
  """C encode/decode == numpy encode/decode for every crop and two qualities."""
  core = entropy_core.Core(arrays)
  numpy_model = reference.Reference(dict(arrays))
  for height, width in SIZES:
    for quality in (0.0, 1.0):
      y, z = latents(photo[:height, :width], quality)
      expected = coding_loop.encode(numpy_model, y, z)
      z_stream, y_stream, check, y_hat = core.encode(y, z)
      assert (z_stream, y_stream, check) == expected, (height, width, quality)
      z_symbols, decoded = core.decode(height, width, z_stream, y_stream, check)
      np.testing.assert_array_equal(decoded, y_hat)
      np.testing.assert_array_equal(
          decoded, coding_loop.decode(numpy_model, z_stream, y_stream, height, width, check))
      hz, wz = bitstream.hyper_grid(height, width)
      np.testing.assert_array_equal(
          core.hyper_features(z_symbols, *decoded.shape[1:3]),
          numpy_model.model.hyper_features(
              z_symbols.astype(np.float64) * entropy_model.ONE +
              numpy_model.tables["tables/z_offset"], *decoded.shape[1:3]))
      assert z_symbols.shape == (1, hz, wz, core.hyper_channels)


def test_c_core_codes_the_numpy_streams_wavefront(tiny_module, photo):
  _check_against_numpy(tiny_module.reference_arrays(), _latents(tiny_module), photo)


def test_c_core_codes_the_numpy_streams_serial(tiny_serial_module, photo):
  _check_against_numpy(tiny_serial_module.reference_arrays(), _latents(tiny_serial_module),
                       photo)


def test_c_core_codes_the_numpy_streams_cnn_hyper_synthesis(photo):
  d = json.loads(config.load("tiny").to_json())
  d["name"] = "tiny_cnn"
  d["model"].update(transform="cnn", embed_dims=[16, 16, 16, 32], hyper_dim=16)
  cfg = config.from_dict(d)
  tf.random.set_seed(0)
  model = checkpoint.build_model(cfg)
  tables = tables_lib.compute(model)
  module = tf_codec.CodecModule(model, cfg.to_json(), tables=tables)
  assert "hyper_synthesis/layers/0/w" in module.reference_arrays()
  _check_against_numpy(module.reference_arrays(), _latents(module), photo)


def test_bundled_model_decodes_its_own_files_as_numpy_does(photo):
  """The bundled model's file of a Kodak crop: the C core decodes the latents the numpy
  reference decodes, and its encoder writes the same streams from the same latents."""
  path = tf_codec.default_model_path()
  with np.load(f"{path}/assets/{reference.FILENAME}") as data:
    arrays = {key: data[key] for key in data.files}
  the_codec = tf_codec.load(path)
  image = photo[:48, :80]
  data = the_codec.compress(image, 0.5)
  header, z_stream, y_stream = bitstream.unpack(data)
  core = entropy_core.Core(arrays)
  _, y_hat = core.decode(header.height, header.width, z_stream, y_stream, header.latent_check)
  expected = the_codec.module.decode_latent(tf.constant(data))["y_hat"].numpy()
  np.testing.assert_array_equal(y_hat, expected)


def _blob_parts(blob):
  return blob[:24], blob[24:]


def _with_payload(payload):
  return entropy_core.MAGIC + struct.pack("<IQQ", entropy_core.VERSION, len(payload),
                                          zlib.crc32(payload)) + payload


def test_malformed_model_blobs_are_one_line_errors(tiny_module):
  blob = entropy_core.model_blob(tiny_module.reference_arrays())
  entropy_core.Core(blob)  # the good one loads
  head, payload = _blob_parts(blob)
  bad = {
      "bad magic": b"XXXX" + blob[4:],
      "version": blob[:4] + struct.pack("<I", 9) + blob[8:],
      "wrong length": blob[:-8],
      "checksum mismatch": head + bytes([payload[0] ^ 1]) + payload[1:],
      # a valid checksum over a payload that ends early, and one with a huge dimension
      "ends early|malformed": _with_payload(payload[:len(payload) // 2]),
      "malformed": _with_payload(payload[:48] + struct.pack("<q", 1 << 40) + payload[56:]),
  }
  # A convolution kernel whose dimensions (each one allowed) multiply past 2^64: refused,
  # not wrapped around to a small array that later indexing would overrun.
  channels = struct.unpack("<q", payload[4 * 8:5 * 8])[0]  # the kernel's input channels
  huge = struct.pack("<9q", 1, 1, 1, 0, 4, 1 << 24, 1 << 24, channels, 1 << 24)
  bad["conv kernel"] = _with_payload(payload[:5 * 8] + huge + bytes(800))
  for message, data in bad.items():
    with pytest.raises(entropy_core.CoreError, match=message) as e:
      entropy_core.Core(data)
    assert "\n" not in str(e.value)
  rng = np.random.default_rng(0)
  for _ in range(50):  # random damage under a valid checksum: an error, never a crash
    damaged = bytearray(payload)
    for i in rng.integers(0, len(damaged), 4):
      damaged[i] = rng.integers(0, 256)
    try:
      entropy_core.Core(_with_payload(bytes(damaged)))
    except entropy_core.CoreError:
      pass


def test_corrupt_streams_and_declared_sizes_are_errors(tiny_module, photo):
  arrays = tiny_module.reference_arrays()
  core = entropy_core.Core(arrays)
  y, z = _latents(tiny_module)(photo[:64, :96], 0.5)
  z_stream, y_stream, check, y_hat = core.encode(y, z)
  with pytest.raises(entropy_core.CoreError, match="latents differ"):
    core.decode(64, 96, z_stream, y_stream, check ^ 1)
  with pytest.raises(entropy_core.CoreError, match="too short for the image size"):
    core.decode(65535, 65535, z_stream, y_stream, check)
  with pytest.raises(entropy_core.CoreError, match="exceeds the limit of 100"):
    core.decode(64, 96, z_stream, y_stream, check, max_pixels=100)
  rng = np.random.default_rng(1)
  for _ in range(40):  # flipped bits: an error or (rarely) the same latents
    stream = bytearray(y_stream)
    i = rng.integers(0, len(stream))
    stream[i] ^= 1 << int(rng.integers(0, 8))
    try:
      _, decoded = core.decode(64, 96, z_stream, bytes(stream), check)
    except entropy_core.CoreError as e:
      assert "\n" not in str(e)
    else:
      np.testing.assert_array_equal(decoded, y_hat)


def test_non_finite_latents_are_refused(tiny_module):
  core = entropy_core.Core(tiny_module.reference_arrays())
  y = np.zeros([1, 2, 3, core.latent_channels], np.float32)
  z = np.zeros([1, 1, 1, core.hyper_channels], np.float32)
  y[0, 1, 2, 0] = np.nan
  with pytest.raises(entropy_core.CoreError, match="non-finite"):
    core.encode(y, z)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_decoder_core_under_sanitizers(tiny_module, photo, tmp_path):
  """tools/asan_entropy_core.sh: real files of the tiny model and 400 random mutations
  decode or fail cleanly under AddressSanitizer and UndefinedBehaviorSanitizer, and
  those that decode, decoded again with a progress callback that stops the coding,
  stop without a leak."""
  arrays = tiny_module.reference_arrays()
  blob = tmp_path / "model.tfec"
  blob.write_bytes(entropy_core.model_blob(arrays))
  core = entropy_core.Core(arrays)
  latents = _latents(tiny_module)
  files = []
  for height, width in [(16, 16), (40, 72), (17, 300)]:
    y, z = latents(photo[:height, :width], 0.5)
    z_stream, y_stream, check, _ = core.encode(y, z)
    path = tmp_path / f"{height}x{width}.tflic"
    path.write_bytes(bitstream.pack(core.mode, bytes(8), height, width, 0, z_stream,
                                    y_stream, check))
    files.append(str(path))
  result = subprocess.run([str(REPO / "tools" / "asan_entropy_core.sh"), str(blob), "400",
                           "7", *files], capture_output=True, text=True, timeout=600,
                          check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "400 mutations of 3 files" in result.stdout


@pytest.fixture(scope="module")
def bundled_core():
  """The bundled model's C core: no model to build."""
  with np.load(REPO / "tflic" / "bundled" / "model" / "assets" /
               "integer_entropy_model.npz") as data:
    return entropy_core.Core({key: data[key] for key in data.files})


def _random_latents(core, h, w):
  rng = np.random.default_rng(h * 1000 + w)
  y = rng.normal(0, 3, [1, h, w, core.latent_channels]).astype(np.float32)
  z = rng.normal(0, 3, [1, (h + 3) // 4, (w + 3) // 4, core.hyper_channels])
  return y, z.astype(np.float32)


def test_progress_counts_the_chunks_up_to_the_total_and_changes_no_byte(bundled_core):
  core, h, w = bundled_core, 6, 9
  y, z = _random_latents(core, h, w)
  z_stream, y_stream, check, y_hat = core.encode(y, z)
  total = core.chunks(h, w)
  assert core.mode == "wavefront"
  steps = (h + w - 1) * core.num_groups  # one batch per anti-diagonal and group
  for interval, num_calls in [(None, None), (1, steps), (40, None), (total + 1, 1)]:
    for coding in ("encode", "decode"):
      calls = []
      report = lambda done, total, calls=calls: calls.append((done, total))
      if coding == "encode":
        *streams, decoded = core.encode(y, z, progress=report, interval=interval)
        assert streams == [z_stream, y_stream, check]
      else:
        _, decoded = core.decode(16 * h, 16 * w, z_stream, y_stream, check,
                                 progress=report, interval=interval)
      np.testing.assert_array_equal(decoded, y_hat)
      done = [d for d, _ in calls]
      assert {t for _, t in calls} == {total} and done[-1] == total, (coding, interval)
      assert all(a < b for a, b in zip(done, done[1:])), (coding, interval)
      assert num_calls is None or len(calls) == num_calls, (coding, interval)
      if interval:  # between calls at least `interval` chunks, the last call apart
        assert all(b - a >= interval for a, b in zip([0] + done[:-2], done[:-1]))


def test_an_exception_in_progress_stops_the_coding_and_propagates(bundled_core):
  core, h, w = bundled_core, 6, 9
  y, z = _random_latents(core, h, w)
  z_stream, y_stream, check, _ = core.encode(y, z)
  calls = []

  def interrupt_at_second_call(done, total):
    calls.append(done)
    if len(calls) == 2:
      raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    core.decode(16 * h, 16 * w, z_stream, y_stream, check,
                progress=interrupt_at_second_call, interval=1)
  assert len(calls) == 2

  def fail(done, total):
    raise ValueError(f"stop at {done}/{total}")

  with pytest.raises(ValueError, match=r"stop at \d+/216"):
    core.encode(y, z, progress=fail)
  with pytest.raises(TypeError, match="callable"):
    core.encode(y, z, progress=3)
  # The core is unchanged: the same bytes again.
  assert core.encode(y, z)[:3] == (z_stream, y_stream, check)


@pytest.mark.skipif(not pathlib.Path("/proc/self/statm").exists(), reason="needs /proc")
def test_stopped_coding_frees_what_it_allocated(bundled_core):
  """What the C core allocates (the hyper features, the loop's buffers, the streams) is
  freed when the callback stops it: 24 stopped codings of a Kodak-sized latent (each
  allocating over a megabyte) leave the process's memory where it was."""
  core, h, w = bundled_core, 32, 48
  y, z = _random_latents(core, h, w)
  z_stream, y_stream, check, _ = core.encode(y, z)

  def stop(done, total):
    raise KeyboardInterrupt

  def stopped_codings(count):
    for _ in range(count):
      with pytest.raises(KeyboardInterrupt):
        core.encode(y, z, progress=stop)
      with pytest.raises(KeyboardInterrupt):
        core.decode(16 * h, 16 * w, z_stream, y_stream, check, progress=stop)

  resident = lambda: int(pathlib.Path("/proc/self/statm").read_text().split()[1])
  stopped_codings(3)
  before = resident()
  stopped_codings(12)
  assert (resident() - before) * 4096 < 8 << 20
