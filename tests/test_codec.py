"""The codec writes real files that decode exactly, alone, and fail safely when damaged."""

import contextlib
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
import tensorflow as tf

from tflic.codec import bitstream
from tflic.codec.rangecoder import tf_ops as range_coder
from tflic.codec import tf_codec
from tflic.deploy import savedmodel
from tflic import errors

REPO = pathlib.Path(__file__).resolve().parents[1]
SIZES = [(97, 131), (16, 200), (200, 16), (1, 1), (37, 53)]


@pytest.fixture(scope="module")
def codecs(tiny_module, tiny_serial_module):
  """Codec, its module and model for each decoding mode (the session's modules)."""
  return {module.model.context.mode: (tf_codec.Codec(module), module, module.model)
          for module in (tiny_module, tiny_serial_module)}


def _image(height, width, seed=0):
  rng = np.random.default_rng(seed)
  # Smooth content plus noise: latents of a few symbols, like a photo's.
  yy, xx = np.mgrid[:height, :width]
  base = 128 + 60 * np.sin(yy[..., None] / 7.0 + np.arange(3)) * np.cos(xx[..., None] / 9.0)
  return np.clip(base + rng.normal(0, 10, (height, width, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("mode", ["wavefront", "serial"])
def test_round_trip_equals_coded_forward(codecs, mode):
  the_codec, module, model = codecs[mode]
  # Run in a graph like the codec (any image size, one trace): eager kernels round
  # differently in the last bit.
  coded_forward = tf.function(module.coded_forward,
                              input_signature=module.compress.input_signature)
  for height, width in SIZES:
    if mode == "serial" and height * width > 5000:
      continue  # the serial loop is slow; small sizes cover it
    image = _image(height, width)
    data = the_codec.compress(image, 0.4)
    header, _, _ = bitstream.unpack(data)
    assert (header.height, header.width, header.mode) == (height, width, mode)
    decoded = the_codec.decompress(data)
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    reference = coded_forward(tf.constant(image), tf.constant(0.4))
    decoded_latent = module.decode_latent(tf.constant(data))
    np.testing.assert_array_equal(decoded_latent["y_hat"].numpy(), reference["y_hat"].numpy())
    np.testing.assert_array_equal(decoded_latent["z_symbols"].numpy(),
                                  reference["z_symbols"].numpy())
    expected = np.round(np.clip(reference["x_hat"][0, :height, :width] * 255, 0, 255))
    np.testing.assert_array_equal(decoded, expected.astype(np.uint8))


def test_quality_knob_changes_rate(codecs):
  the_codec = codecs["wavefront"][0]
  image = _image(64, 64)
  sizes = [len(the_codec.compress(image, q)) for q in (0.0, 1.0)]
  assert sizes[0] != sizes[1]


def test_refined_files_decode_with_the_same_decoder(codecs, tiny_codec):
  the_codec, module, model = codecs["wavefront"]
  image = _image(40, 56)
  plain = the_codec.compress(image, 0.6)
  assert module.compress_refined(tf.constant(image), tf.constant(0.6),
                                 tf.constant(0)).numpy() == plain
  refined = the_codec.compress(image, 0.6, refine_steps=3)
  assert refined != plain and the_codec.compress(image, 0.6, refine_steps=3) == refined
  y_hat = module.decode_latent(tf.constant(refined))["y_hat"]
  # In a graph like the codec: eager kernels round differently in the last bit, which
  # flipped one uint8 of 6,720 in a CI run.
  x_hat = tf.function(module.synthesize_latent)(
      y_hat, tf.constant(bitstream.unpack(refined)[0].quality, tf.float32))
  expected = np.round(np.clip(x_hat[0, :40, :56] * 255, 0, 255)).astype(np.uint8)
  np.testing.assert_array_equal(the_codec.decompress(refined), expected)
  assert tiny_codec.compress(image, 0.6, refine_steps=3) == refined  # the export's
  with pytest.raises(errors.TflicError, match="refine_steps must be >= 0"):
    the_codec.compress(image, 0.6, refine_steps=-1)


def test_refinement_optimizes_the_distortion_the_model_was_trained_for(
    codecs, tiny_workdir, tmp_path, monkeypatch):
  workdir = tmp_path / "ms_ssim"
  shutil.copytree(tiny_workdir, workdir)
  stored = json.loads((workdir / "config.json").read_text())
  stored["train"]["distortion"] = "ms-ssim"
  (workdir / "config.json").write_text(json.dumps(stored))
  ms_ssim_codec, mse_codec = tf_codec.load(str(workdir)), codecs["wavefront"][0]
  assert ms_ssim_codec.module.distortion == "ms-ssim"
  image = _image(48, 56)
  assert ms_ssim_codec.compress(image, 0.6) == mse_codec.compress(image, 0.6)
  refined = ms_ssim_codec.compress(image, 0.6, refine_steps=3)
  assert refined != mse_codec.compress(image, 0.6, refine_steps=3)
  # The same decoder (the distortion is no part of the fingerprint) decodes it.
  assert mse_codec.decompress(refined).shape == image.shape
  with pytest.raises(errors.TflicError, match="at least 41 pixels per side"):
    ms_ssim_codec.compress(_image(32, 56), 0.6, refine_steps=1)
  exported = []
  monkeypatch.setattr(savedmodel, "export", lambda module, out, **_: exported.append(module))
  savedmodel.export_checkpoint(str(workdir), str(tmp_path / "export"))
  assert exported[0].distortion == "ms-ssim"
  with pytest.raises(errors.TflicError, match="unknown distortion 'psnr'"):
    tf_codec.CodecModule(codecs["wavefront"][2], distortion="psnr")


def test_mode_mismatch_is_refused(codecs):
  _, _, model = codecs["wavefront"]
  with pytest.raises(errors.TflicError, match="trained with the wavefront"):
    tf_codec.CodecModule(model, mode="serial")


def test_another_models_file_is_rejected(codecs):
  data = codecs["serial"][0].compress(_image(20, 20), 0.5)
  with pytest.raises(errors.TflicError, match="different model"):
    codecs["wavefront"][0].decompress(data)
  # The graph checks the fingerprint too (SavedModel users have no Python checks).
  with pytest.raises(tf.errors.InvalidArgumentError, match="different model"):
    codecs["wavefront"][1].decompress(tf.constant(data))


def test_header_layout_matches_python_reader(codecs):
  data = codecs["wavefront"][0].compress(_image(33, 45), 0.25)
  header, z_stream, y_stream = bitstream.unpack(data)
  assert len(data) == bitstream.HEADER_SIZE + len(z_stream) + len(y_stream)
  offset = bitstream.CHECKSUM_OFFSET
  assert bitstream.HEADER_SIZE == offset + 4 == 40
  assert header.checksum == zlib.adler32(data[:offset] + data[offset + 4:])
  assert header.quality_code == round(0.25 * 65535)
  assert float(tf_codec.adler32(tf.constant(b"Wikipedia"))) == 0x11E60398


@contextlib.contextmanager
def _log_gains(model, value):
  """The model's gains set to `value` for a block (read by its codec's graphs when they
  run; the module's fingerprint and tables do not depend on them)."""
  saved = model.log_gains.numpy()
  model.log_gains.assign(tf.fill(model.log_gains.shape, value))
  try:
    yield
  finally:
    model.log_gains.assign(saved)


def test_non_finite_latents_are_rejected_and_huge_ones_clamped_not_hung(codecs):
  the_codec, _, model = codecs["wavefront"]
  with _log_gains(model, float("nan")):
    with pytest.raises(errors.TflicError, match="non-finite latents"):
      the_codec.compress(_image(16, 16), 0.5)
  with _log_gains(model, 40.0):  # y ~ e^40
    data = the_codec.compress(_image(16, 16), 0.5)
    assert the_codec.decompress(data).shape == (16, 16, 3)


def _mutations(data, rng, count):
  """Damaged copies of a file: flips, truncations, garbage, some with a valid checksum."""
  out = []
  for i in range(count):
    d = bytearray(data)
    kind = i % 4
    if kind == 0:
      for _ in range(rng.integers(1, 4)):
        d[rng.integers(len(d))] ^= 1 << rng.integers(8)
    elif kind == 1:
      d = d[:rng.integers(len(d))]
    elif kind == 2:
      d += rng.bytes(int(rng.integers(1, 16)))
    else:  # stream damage the checksum does not catch: only the range coder sees it
      for _ in range(rng.integers(1, 4)):
        d[rng.integers(bitstream.HEADER_SIZE, len(d))] = rng.integers(256)
      d[bitstream.CHECKSUM_OFFSET:bitstream.HEADER_SIZE] = bitstream.checksum(
          bytes(d)).to_bytes(4, "little")
    out.append(bytes(d))
  return out


_FUZZ_PROCESS = textwrap.dedent("""
    import hashlib, json, sys, time
    from tflic.codec import tf_codec
    from tflic import errors
    model_dir, original, damaged_list, out = sys.argv[1:]
    the_codec = tf_codec.load(model_dir)
    results = []
    for path in open(damaged_list).read().split():
      data = open(path, "rb").read()
      start = time.perf_counter()
      try:
        image = the_codec.decompress(data)
        outcome = "image" if image.ndim == 3 and image.shape[2] == 3 else "bad-image"
        message = hashlib.sha256(image.tobytes()).hexdigest()
      except errors.TflicError as e:
        outcome, message = "error", str(e)
      results.append(dict(outcome=outcome, message=message,
                          seconds=time.perf_counter() - start))
      json.dump(results, open(out, "w"))
""")


def test_random_corruptions_fail_cleanly(tiny_model_dir, tiny_codec, tmp_path):
  """300 damaged files decoded in a child process: each gives a one-line error or the
  original image (damage the decoder never reads), within a time bound; the process
  neither crashes nor hangs, and no damaged file decodes to another image."""
  the_codec = tiny_codec
  data = the_codec.compress(_image(48, 64), 0.6)
  damaged = [d for d in _mutations(data, np.random.default_rng(0), 300) if d != data]
  paths = []
  for i, d in enumerate(damaged):
    paths.append(tmp_path / f"{i}.tflic")
    paths[-1].write_bytes(d)
  (tmp_path / "list.txt").write_text("\n".join(map(str, paths)))
  script = tmp_path / "fuzz.py"
  script.write_text(_FUZZ_PROCESS)
  out = tmp_path / "results.json"
  result = subprocess.run(
      [sys.executable, str(script), str(tiny_model_dir), "-", str(tmp_path / "list.txt"),
       str(out)], cwd=REPO, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
      capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  import json  # pylint: disable=g-import-not-at-top
  results = json.loads(out.read_text())
  assert len(results) == len(damaged)
  assert all(r["outcome"] in ("image", "error") for r in results)
  clean = hashlib.sha256(the_codec.decompress(data).tobytes()).hexdigest()
  assert all(r["message"] == clean for r in results if r["outcome"] == "image")
  assert all(r["message"] and "\n" not in r["message"] for r in results
             if r["outcome"] == "error")
  assert max(r["seconds"] for r in results) < 30
  assert sum(r["outcome"] == "error" for r in results) >= 200


_PLAIN_PROCESS = textwrap.dedent("""
    import sys
    import tensorflow as tf
    model_dir, image_png, own_tflic, other_tflic, out_png, ops = sys.argv[1:]
    tf.load_op_library(ops)  # the range coder ops, the only tflic part a server needs
    loaded = tf.saved_model.load(model_dir)
    image = tf.io.decode_png(tf.io.read_file(image_png), channels=3)
    stream = loaded.compress(image, tf.constant(0.5))
    tf.io.write_file(own_tflic, stream)
    decoded = loaded.signatures["decompress"](bitstream=tf.io.read_file(other_tflic))["image"]
    tf.io.write_file(out_png, tf.io.encode_png(decoded))
    assert not any(m.startswith(("tflic", "tensorflow_compression")) for m in sys.modules)
""")


def test_savedmodel_round_trips_in_a_plain_process(tiny_model_dir, tiny_codec, tmp_path):
  """Only tensorflow + tflic's op library: same bytes, byte-identical PNG."""
  the_codec = tiny_codec
  image = _image(50, 70)
  png = tmp_path / "in.png"
  png.write_bytes(tf.io.encode_png(image).numpy())
  data = the_codec.compress(image, 0.5)
  (tmp_path / "here.tflic").write_bytes(data)
  script = tmp_path / "plain.py"
  script.write_text(_PLAIN_PROCESS)
  result = subprocess.run(
      [sys.executable, str(script), str(tiny_model_dir), str(png), str(tmp_path / "there.tflic"),
       str(tmp_path / "here.tflic"), str(tmp_path / "there.png"), str(range_coder.LIBRARY)],
      cwd=tmp_path, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True,
      text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert (tmp_path / "there.tflic").read_bytes() == data
  here_png = tf.io.encode_png(the_codec.decompress(data)).numpy()
  assert (tmp_path / "there.png").read_bytes() == here_png


def test_savedmodel_holds_each_graph_once(tiny_model_dir):
  """The serving signatures call the module's functions: each coding graph is saved once
  (traced in two contexts, they were saved twice, doubling the file and its load time)."""
  from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-import-not-at-top
  saved = saved_model_pb2.SavedModel.FromString(
      (tiny_model_dir / "saved_model.pb").read_bytes())
  names = [f.signature.name for f in saved.meta_graphs[0].graph_def.library.function]
  for function in ("compress", "compress_refined", "decompress", "decode_latent"):
    copies = [name for name in names if re.fullmatch(rf"__inference_{function}_\d+", name)]
    assert len(copies) == 1, (function, copies)
  assert set(saved.meta_graphs[0].signature_def) >= {"compress", "compress_refined",
                                                      "decompress"}


def test_load_rejects_what_is_not_a_model(tmp_path):
  with pytest.raises(errors.TflicError, match="model not found"):
    tf_codec.load(str(tmp_path / "nothing"))
  with pytest.raises(errors.TflicError, match="no trained model"):
    tf_codec.load(str(tmp_path))
