"""The decoder without TensorFlow (tflic.lite): the same streams and latents as the
SavedModel, LiteRT pixels within a level, one-line errors, and no TensorFlow import."""

import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tflic.codec import bitstream
from tflic.codec.deterministic import coding_loop
from tflic.codec.deterministic import entropy_model
from tflic.codec.deterministic import reference
from tflic.codec import tf_codec
from tflic import errors
from tflic.lite import decoder as decoder_lib
from tflic.lite import encoder as encoder_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
SIZES = [(1, 1), (17, 30), (40, 72)]
QUALITIES = (0.0, 1.0)


@pytest.fixture(scope="module")
def lite_dir(tiny_lite_dir):
  return tiny_lite_dir


@pytest.fixture(scope="module")
def saved_codec(tiny_codec):
  return tiny_codec


@pytest.fixture(scope="module")
def photo(kodak_dir):
  return np.asarray(Image.open(kodak_dir / "kodim05.png").convert("RGB"))


@pytest.fixture(scope="module")
def files(saved_codec, photo):
  """{(h, w, quality): .tflic bytes} written by the SavedModel."""
  return {(h, w, q): saved_codec.compress(photo[200:200 + h, 300:300 + w], q)
          for h, w in SIZES for q in QUALITIES}


def _encoder_like(module):
  """The numpy coder's streams for an image, from the analysis' floats (in a graph, as
  in the codec's, traced once for any size)."""
  analyse = tf.function(lambda image, quality: tf_codec.analyse(module.model, image, quality)[1],
                        input_signature=module.compress.input_signature)
  hyper_latent = tf.function(module.model.hyper_latent, input_signature=[
      tf.TensorSpec([1, None, None, module.model.config.latent_channels], tf.float32)])
  numpy_model = reference.Reference(module.reference_arrays())

  def encode(image, quality):
    y = analyse(tf.constant(image), tf.constant(quality, tf.float32))
    return coding_loop.encode(numpy_model, y.numpy(), hyper_latent(y).numpy())

  return encode


def test_numpy_coder_writes_the_savedmodels_streams_in_serial_order(tiny_serial_module,
                                                                     photo):
  """(The wavefront order: tests/test_export_serving.py's split encoder files.)"""
  the_codec, encode_like = tf_codec.Codec(tiny_serial_module), _encoder_like(tiny_serial_module)
  for (h, w), quality in zip(SIZES, (0.0, 0.5, 1.0)):
    image = photo[200:200 + h, 300:300 + w]
    header, z_stream, y_stream = bitstream.unpack(the_codec.compress(image, quality))
    assert encode_like(image, quality) == (z_stream, y_stream,
                                           header.latent_check), (h, w, quality)


def test_lite_decoder_gives_the_savedmodels_latents_and_pixels(lite_dir, saved_codec, files):
  lite = decoder_lib.Decoder(str(lite_dir))
  for key, data in files.items():
    _, y_hat = lite.decode_latent(data)
    expected = saved_codec.module.decode_latent(tf.constant(data))["y_hat"].numpy()
    np.testing.assert_array_equal(y_hat, expected, err_msg=str(key))
    image, reference_image = lite.decompress(data), saved_codec.decompress(data)
    assert image.shape == reference_image.shape == (key[0], key[1], 3)
    difference = np.abs(image.astype(int) - reference_image)
    assert difference.max() <= 1 and difference.mean() < 0.01, key


def test_lite_encoder_files_decode_with_both_decoders(lite_dir, saved_codec, files, photo):
  """The fast encoder's files: valid for the SavedModel and tflic-lite alike, and where
  LiteRT's analysis meets TensorFlow's floats, the SavedModel's bytes."""
  encoder, lite = encoder_lib.Encoder(str(lite_dir)), decoder_lib.Decoder(str(lite_dir))
  identical = 0
  for (h, w, quality), saved in files.items():
    data = encoder.compress(photo[200:200 + h, 300:300 + w], quality)
    header = bitstream.unpack(data)[0]
    assert (header.height, header.width, header.quality_code) == (
        h, w, bitstream.unpack(saved)[0].quality_code)
    _, y_hat = lite.decode_latent(data)
    expected = saved_codec.module.decode_latent(tf.constant(data))["y_hat"].numpy()
    np.testing.assert_array_equal(y_hat, expected)
    difference = np.abs(lite.decompress(data).astype(int) - saved_codec.decompress(data))
    assert difference.max() <= 1
    identical += data == saved
  assert identical >= len(files) - 1  # a rounding boundary may fall between the runtimes


def test_the_bundled_lite_files_are_the_bundled_models(photo):
  """tflic/bundled/lite (what `tflic compress` and `decompress` run by default) codes the
  bundled SavedModel's files: the same fingerprint, and files read by both."""
  saved = tf_codec.load(tf_codec.default_model_path())
  lite_dir = REPO / "tflic" / "bundled" / "lite"
  encoder, lite = encoder_lib.Encoder(str(lite_dir)), decoder_lib.Decoder(str(lite_dir))
  assert encoder.fingerprint == lite.fingerprint == saved.fingerprint
  image = photo[100:148, 200:264]
  for data in (encoder.compress(image, 0.4), saved.compress(image, 0.4)):
    np.testing.assert_array_equal(
        lite.decode_latent(data)[1],
        saved.module.decode_latent(tf.constant(data))["y_hat"].numpy())
    assert np.abs(lite.decompress(data).astype(int) - saved.decompress(data)).max() <= 1


@pytest.mark.parametrize("quality", [0.0, 0.1, 1 / 3, 0.5, 0.77777, 1.0])
def test_the_quality_code_is_the_savedmodels(quality, saved_codec):
  image = np.zeros([16, 16, 3], np.uint8)
  assert bitstream.quality_code(quality) == bitstream.unpack(
      saved_codec.compress(image, quality))[0].quality_code


def test_the_encoder_refuses_bad_images(lite_dir):
  encoder = encoder_lib.Encoder(str(lite_dir))
  for image, message in [(np.zeros([4, 4], np.uint8), "expected a uint8 RGB image"),
                         (np.zeros([4, 4, 3], np.float32), "expected a uint8 RGB image"),
                         (np.zeros([0, 4, 3], np.uint8), "outside 1..65535")]:
    with pytest.raises(errors.TflicError, match=message):
      encoder.compress(image, 0.5)
  with pytest.raises(errors.TflicError, match="exceeds the limit of 10"):
    encoder.compress(np.zeros([4, 4, 3], np.uint8), 0.5, max_pixels=10)
  with pytest.raises(errors.TflicError, match="quality must be in"):
    encoder.compress(np.zeros([4, 4, 3], np.uint8), 1.5)


def test_lite_pixels_do_not_depend_on_the_synthesis_threads(lite_dir, files):
  """tflic-lite's default uses every CPU for the synthesis: the pixels must be those of
  one thread."""
  decoders = [decoder_lib.Decoder(str(lite_dir), num_threads=n) for n in (1, 2, 4)]
  for key, data in files.items():
    one, *more = (d.decompress(data) for d in decoders)
    for image in more:
      np.testing.assert_array_equal(image, one, err_msg=str(key))


def _flipped(data, offset, bit):
  """`data` with one bit of its streams flipped and the checksum recomputed, as a hostile
  file would be."""
  header, z_stream, y_stream = bitstream.unpack(data)
  streams = bytearray(z_stream + y_stream)
  streams[offset] ^= 1 << bit
  return bitstream.pack(header.mode, header.fingerprint, header.height, header.width,
                        header.quality_code, bytes(streams[:header.z_bytes]),
                        bytes(streams[header.z_bytes:]), header.latent_check)


def test_corrupt_streams_are_errors_or_the_same_latents(lite_dir, files):
  """A decoder never returns other latents than the encoder's: every flip either fails
  with a TflicError or leaves the decoded symbols unchanged."""
  lite = decoder_lib.Decoder(str(lite_dir))
  data = files[(40, 72, 1.0)]
  _, expected = lite.decode_latent(data)
  header = bitstream.unpack(data)[0]
  rng = np.random.default_rng(0)
  errors_seen = 0
  for _ in range(40):
    try:
      _, y_hat = lite.decode_latent(_flipped(
          data, int(rng.integers(header.z_bytes + header.y_bytes)), int(rng.integers(8))))
    except errors.TflicError as e:
      assert "\n" not in str(e)
      errors_seen += 1
    else:
      np.testing.assert_array_equal(y_hat, expected)
  assert errors_seen > 20


_NO_TENSORFLOW = """raise ImportError("tensorflow must not be imported by tflic.lite")\n"""


def test_tflic_lite_decodes_without_tensorflow(lite_dir, saved_codec, files, tmp_path):
  blocker = tmp_path / "blocker"
  for package in ("tensorflow", "tensorflow_compression"):
    (blocker / package).mkdir(parents=True)
    (blocker / package / "__init__.py").write_text(_NO_TENSORFLOW)
  good = files[(17, 30, 0.0)]
  (tmp_path / "good.tflic").write_bytes(good)
  (tmp_path / "corrupt.tflic").write_bytes(good[:-3])
  header, z_stream, y_stream = bitstream.unpack(files[(1, 1, 1.0)])
  (tmp_path / "other.tflic").write_bytes(bitstream.pack(  # as another model's file
      header.mode, bytes(8), header.height, header.width, header.quality_code, z_stream,
      y_stream, header.latent_check))
  out = tmp_path / "out"
  out.mkdir()
  env = dict(os.environ, PYTHONPATH=f"{blocker}{os.pathsep}{REPO}")
  result = subprocess.run(
      [sys.executable, "-m", "tflic.lite.cli", "decompress", f"--model={lite_dir}",
       str(tmp_path / "good.tflic"), str(tmp_path / "corrupt.tflic"),
       str(tmp_path / "other.tflic"), str(out)],
      env=env, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 2, result.stderr
  # LiteRT's runtime logs an INFO line of its own to stderr.
  lines = [l for l in result.stderr.splitlines() if l.startswith("tflic-lite decompress:")]
  assert len(lines) == 2, result.stderr
  assert "corrupt.tflic: corrupt tflic file: truncated" in lines[0]
  assert "other.tflic: bitstream was written with a different model" in lines[1]
  assert sorted(os.listdir(out)) == ["good.png"]
  image = np.asarray(Image.open(out / "good.png"))
  assert np.abs(image.astype(int) - saved_codec.decompress(good)).max() <= 1


def test_missing_or_stale_exports_are_one_line_errors(lite_dir, tmp_path):
  with pytest.raises(errors.TflicError, match="not a LiteRT export"):
    decoder_lib.Decoder(str(tmp_path))
  copy = tmp_path / "copy"
  copy.mkdir()
  for name in os.listdir(lite_dir):
    (copy / name).write_bytes((lite_dir / name).read_bytes())
  with open(copy / "synthesis.tflite", "ab") as f:
    f.write(b"\0")
  with pytest.raises(errors.TflicError, match="SHA-256 mismatch"):
    decoder_lib.Decoder(str(copy))


def test_coding_steps_match_the_graphs_order():
  from tflic.model import coding_order  # pylint: disable=g-import-not-at-top
  for mode in ("wavefront", "serial"):
    steps = coding_loop.coding_steps(3, 5, 2, mode)
    assert len(steps) == coding_order.num_steps(3, 5, 2, mode)
    for step, (positions, group) in enumerate(steps):
      expected_positions, expected_group = coding_order.step_chunks(step, 3, 5, 2, mode)
      np.testing.assert_array_equal(positions, expected_positions.numpy())
      assert group == int(expected_group)


def test_decode_step_contexts_match_the_teacher_forced_pass(tiny_module, photo):
  """The coder's cached contexts (tflic.codec.deterministic.coding_loop) give the means and tables of
  the teacher-forced numpy pass, chunk for chunk."""
  module = tiny_module
  the_codec = tf_codec.Codec(module)
  data = the_codec.compress(photo[:70, :90], 0.5)
  ref = reference.Reference(module.reference_arrays())
  latent = module.decode_latent(tf.constant(data))
  mean, index = ref.parameters(latent["z_symbols"].numpy(), latent["y_hat"].numpy())
  y_hat = latent["y_hat"].numpy()
  seen_mean, seen_index = np.zeros_like(mean), np.zeros_like(index)
  c = y_hat.shape[-1] // ref.num_groups
  hyper = ref.model.hyper_features(
      latent["z_symbols"].numpy() * entropy_model.ONE +
      ref.tables["tables/z_offset"], y_hat.shape[1], y_hat.shape[2])

  def record(positions, group, step_mean, step_index):
    seen_mean[positions[:, 0], positions[:, 1], group * c:(group + 1) * c] = step_mean
    seen_index[positions[:, 0], positions[:, 1], group * c:(group + 1) * c] = step_index
    return (y_hat[0, positions[:, 0], positions[:, 1], group * c:(group + 1) * c] -
            step_mean) / entropy_model.ONE

  decoded = coding_loop.coding_loop(ref, hyper, y_hat.shape[1], y_hat.shape[2], record)
  np.testing.assert_array_equal(decoded, y_hat)
  np.testing.assert_array_equal(seen_mean, mean)
  np.testing.assert_array_equal(seen_index, index)


def test_cli_usage_errors(tmp_path):
  script = textwrap.dedent("""
      import sys
      from tflic.lite import cli
      sys.exit(cli.main(sys.argv[1:]))
  """)
  result = subprocess.run([sys.executable, "-c", script, "decompress", "--model",
                           str(tmp_path / "nothing"), "a.tflic", "b.png"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith("tflic-lite decompress: error: ")
