"""`tflic compress / decompress / info` and their image I/O.

Whole commands run as subprocesses only where the real process matters (compressing with
a training directory, whose codec is traced in the command's process after absl's app.run
has started, and `info` not importing TensorFlow); the rest call `cli.main` in-process,
which parses flags and reports errors exactly as the command does.
"""

import json
import logging
import os
import pathlib
import re
import struct
import subprocess
import sys
import textwrap
import zlib

from absl import flags
from absl.testing import flagsaver
import numpy as np
from PIL import Image
import pytest

from tflic.codec import bitstream
# Defines the flags, which must exist before run_main's flagsaver saves them.
from tflic.codec import image_io
from tflic import codec_cli  # pylint: disable=unused-import
from tflic import errors

REPO = pathlib.Path(__file__).resolve().parents[1]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
# `IN -> OUT: WxH, N bytes, X bpp, S s`
RESULT = re.compile(r"^(\S+) -> (\S+): (\d+)x(\d+), (\d+) bytes, ([\d.]+) bpp, [\d.]+ s$")
ERROR = re.compile(r"^tflic \w+: error: ")
RNG = np.random.default_rng(0)
# Smooth, so that JPEG keeps it close; noisy, so that the codec has something to code.
RGB = np.clip(np.stack(np.meshgrid(np.arange(40) * 6, np.arange(24) * 10) + [
    np.full((24, 40), 128)], axis=2) + RNG.normal(0, 8, (24, 40, 3)), 0, 255).astype(np.uint8)
GRAY16 = RNG.integers(0, 65536, (21, 17), dtype=np.uint16)


def _png_chunk(kind, data):
  return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width, height, bit_depth, color_type, idat):
  """A PNG file written by hand, for what Pillow cannot write (48-bit, lying headers)."""
  ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) +
          _png_chunk(b"IEND", b""))


def _rgb48_png(pixels):
  rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
  return _png(pixels.shape[1], pixels.shape[0], 16, 2, zlib.compress(rows))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
  """Input files of every kind the command line reads, by name."""
  d = tmp_path_factory.mktemp("images")
  rgba = np.concatenate([RGB, np.full(RGB.shape[:2] + (1,), 7, np.uint8)], axis=2)
  Image.fromarray(RGB).save(d / "rgb.png")
  Image.fromarray(RGB).save(d / "photo.jpg", quality=95)
  Image.fromarray(RGB).save(d / "lossless.webp", lossless=True)
  Image.fromarray(RGB).save(d / "rgb.bmp")
  Image.fromarray(RGB).save(d / "rgb.tif")
  Image.fromarray(RGB[:, :, 0]).save(d / "gray.png")
  Image.fromarray(RGB).convert("P").save(d / "palette.png")
  Image.fromarray(rgba).save(d / "rgba.png")
  Image.fromarray(rgba[:, :, 1:3]).save(d / "la.png")  # LA
  Image.fromarray(GRAY16).save(d / "gray16.png")  # I;16
  Image.fromarray(GRAY16.astype(np.int32)).save(d / "int32.tif")  # I
  (d / "rgb48.png").write_bytes(_rgb48_png(np.stack([GRAY16] * 3, axis=2)))
  Image.fromarray(RGB).save(d / "anim.gif")
  (d / "text.png").write_text("not an image")
  (d / "truncated.png").write_bytes((d / "rgb.png").read_bytes()[:100])
  (d / "a_directory.png").mkdir()
  return d


def _error_lines(stderr):
  """Our error lines, without TensorFlow's or absl's log lines."""
  return [line for line in stderr.splitlines() if ERROR.match(line)]


def _results(stdout):
  """{input: (output, width, height, bytes, bpp)} from the one-line results."""
  found = {}
  for line in stdout.splitlines():
    m = RESULT.match(line)
    assert m, f"unexpected output line {line!r}"
    found[m[1]] = (m[2], int(m[3]), int(m[4]), int(m[5]), float(m[6]))
  return found


def _assert_bpp_of_written_files(results):
  for src, (dst, width, height, size, bpp) in results.items():
    tflic_file = src if src.endswith(".tflic") else dst
    assert size == os.path.getsize(tflic_file)
    assert bpp == pytest.approx(8 * size / (width * height), abs=5e-5)


def _tflic(cwd, *args):
  """Runs `python -m tflic.cli ARGS` in a new process: (exit status, stdout, stderr)."""
  result = subprocess.run([sys.executable, "-m", "tflic.cli", *map(str, args)], cwd=cwd,
                          env=ENV, capture_output=True, text=True, timeout=300, check=False)
  return result.returncode, result.stdout, result.stderr


# run_main: tests/conftest.py


def _assert_one_error(status, stderr, *words):
  lines = _error_lines(stderr)
  assert status == 2, stderr
  assert len(lines) == 1, stderr
  assert "Traceback" not in stderr
  for word in words:
    assert word in lines[0]


# image_io


@pytest.mark.parametrize("name", ["rgb.png", "lossless.webp", "rgb.bmp", "rgb.tif"])
def test_read_image_lossless_formats(images, name, caplog):
  np.testing.assert_array_equal(image_io.read_image(images / name), RGB)
  assert not caplog.records


def test_read_image_jpeg(images):
  image = image_io.read_image(images / "photo.jpg")
  assert image.dtype == np.uint8 and image.shape == RGB.shape
  assert np.abs(image.astype(int) - RGB).mean() < 8


@pytest.mark.parametrize("name, words, expected", [
    ("gray.png", ["grayscale"], np.stack([RGB[:, :, 0]] * 3, axis=2)),
    ("palette.png", ["palette"], None),
    ("rgba.png", ["RGBA", "alpha dropped"], RGB),
    ("la.png", ["grayscale", "alpha dropped"], np.stack([RGB[:, :, 1]] * 3, axis=2)),
    ("gray16.png", ["16-bit"], np.stack([np.round(GRAY16 / 257)] * 3, axis=2)),
    ("int32.tif", ["16-bit"], np.stack([np.round(GRAY16 / 257)] * 3, axis=2)),
    ("rgb48.png", ["16-bit"], np.stack([GRAY16 >> 8] * 3, axis=2)),
])
def test_read_image_converts_with_one_warning(images, name, words, expected, caplog):
  with caplog.at_level(logging.WARNING):
    image = image_io.read_image(images / name)
  assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
  if expected is not None:
    np.testing.assert_array_equal(image, expected)
  [record] = caplog.records
  message = record.getMessage()
  assert name in message and "\n" not in message
  for word in words:
    assert word in message


@pytest.mark.parametrize("name, words", [
    ("missing.png", ["cannot read", "No such file"]),
    ("a_directory.png", ["is a directory"]),
    ("text.png", ["not a PNG"]),
    ("anim.gif", ["not a PNG"]),  # a format we do not accept
    ("truncated.png", ["corrupt"]),
])
def test_read_image_errors(images, name, words):
  with pytest.raises(errors.TflicError) as e:
    image_io.read_image(images / name)
  message = str(e.value)
  assert str(images / name) in message and "\n" not in message
  for word in words:
    assert word in message


def test_max_pixels_is_checked_before_decoding(tmp_path):
  # The header says 40000x20000 but the pixel data is garbage: only a check made before
  # decoding reports the size rather than the corruption (or allocating 2.4 GB).
  path = tmp_path / "bomb.png"
  path.write_bytes(_png(40000, 20000, 8, 2, b"garbage"))
  with pytest.raises(errors.TflicError, match="800000000 pixels, more than the limit"):
    image_io.read_image(path)
  with pytest.raises(errors.TflicError, match="more than the limit of 1000"):
    image_io.read_image(path, max_pixels=1000)


def test_max_pixels_replaces_pillows_limit(images, monkeypatch):
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
  np.testing.assert_array_equal(image_io.read_image(images / "rgb.png"), RGB)
  assert Image.MAX_IMAGE_PIXELS == 10


def test_atomic_write(tmp_path):
  path = tmp_path / "out.bin"
  image_io.atomic_write(path, b"first")
  assert path.read_bytes() == b"first"
  with pytest.raises(errors.TflicError, match="exists; pass --overwrite"):
    image_io.atomic_write(path, b"second")
  image_io.atomic_write(path, b"second", overwrite=True)
  assert path.read_bytes() == b"second"
  assert sorted(os.listdir(tmp_path)) == ["out.bin"]


@pytest.mark.parametrize("target, words", [
    ("missing_dir/out.bin", ["does not exist"]),
    ("a_dir", ["is a directory"]),
])
def test_atomic_write_unwritable(tmp_path, target, words):
  (tmp_path / "a_dir").mkdir()
  with pytest.raises(errors.TflicError) as e:
    image_io.atomic_write(tmp_path / target, b"data", overwrite=True)
  for word in words:
    assert word in str(e.value)
  assert sorted(os.listdir(tmp_path)) == ["a_dir"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_atomic_write_permission_denied(tmp_path):
  tmp_path.chmod(0o500)
  try:
    with pytest.raises(errors.TflicError, match="Permission denied"):
      image_io.atomic_write(tmp_path / "out.bin", b"data")
  finally:
    tmp_path.chmod(0o700)
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize("failure, raised", [
    (PermissionError(13, "Permission denied"), errors.TflicError),
    (KeyboardInterrupt(), KeyboardInterrupt),
])
def test_atomic_write_failure_leaves_no_file(tmp_path, monkeypatch, failure, raised):
  path = tmp_path / "out.bin"
  path.write_bytes(b"old")

  def fail(*unused_args):
    raise failure

  monkeypatch.setattr(os, "replace", fail)
  with pytest.raises(raised):
    image_io.atomic_write(path, b"new", overwrite=True)
  assert path.read_bytes() == b"old"
  assert sorted(os.listdir(tmp_path)) == ["out.bin"]


def test_write_png(tmp_path):
  image_io.write_png(tmp_path / "out.png", RGB)
  np.testing.assert_array_equal(image_io.read_image(tmp_path / "out.png"), RGB)


# The command line without a model.


@pytest.fixture(scope="module")
def tflic_files(tmp_path_factory):
  """Valid-looking .tflic files (headers only matter here) and broken ones."""
  d = tmp_path_factory.mktemp("tflic")
  valid = bitstream.pack("wavefront", bytes(range(8)), 20, 30, 32768, b"zz", b"yyyy", 7)
  (d / "a.tflic").write_bytes(valid)
  (d / "truncated.tflic").write_bytes(valid[:-1])
  (d / "text.tflic").write_text("not a tflic file at all, but long enough for a header")
  return d


def test_info_prints_header_without_tensorflow(tflic_files):
  script = textwrap.dedent("""
      import sys
      from tflic import cli
      try:
        cli.main(sys.argv)
      except SystemExit as e:
        print("exit", e.code)
      print("tensorflow imported:", "tensorflow" in sys.modules)
  """)
  result = subprocess.run(
      [sys.executable, "-c", script, "info", "a.tflic", "truncated.tflic", "a.tflic"],
      cwd=tflic_files, env=ENV, capture_output=True, text=True, timeout=60, check=False)
  out = result.stdout
  assert "tensorflow imported: False" in out
  assert "exit 2" in out
  assert out.count("a.tflic:") == 2  # the good file after the bad one is still shown
  for field in ["version:     2", "mode:        wavefront",
                "fingerprint: 0001020304050607", "size:        30x20",
                "quality:     0.5000", "z stream:    2 bytes", "y stream:    4 bytes",
                "total:       46 bytes", f"bpp:         {8 * 46 / 600:.4f}",
                "latents:     check 0000000000000007"]:
    assert field in out
  [line] = _error_lines(result.stderr)
  assert "truncated.tflic" in line and "truncated" in line


def test_the_fast_path_never_imports_tensorflow(images, tmp_path):
  """compress and decompress with the bundled model, in a process where importing
  TensorFlow fails; and the SavedModel path still reads the fast path's file."""
  blocker = tmp_path / "no_tf" / "tensorflow"
  blocker.mkdir(parents=True)
  (blocker / "__init__.py").write_text("raise ImportError('TensorFlow is blocked')\n")
  script = textwrap.dedent("""
      import sys
      from tflic import cli
      try:
        status = cli.main(sys.argv)
      except SystemExit as e:  # absl's app.run exits
        status = e.code
      print("tensorflow imported:", any(m.startswith("tensorflow") for m in sys.modules))
      sys.exit(status)
  """)
  env = dict(ENV, PYTHONPATH=os.pathsep.join([str(blocker.parent), str(REPO)]))
  for args in [["compress", "--quality=0.3", images / "rgb.png", tmp_path / "rgb.tflic"],
               ["decompress", tmp_path / "rgb.tflic", tmp_path / "rgb.png"]]:
    result = subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "tensorflow imported: False"
    assert not result.stderr
  assert Image.open(tmp_path / "rgb.png").size == Image.open(images / "rgb.png").size
  # --runtime=tf (or an option that needs it) goes to TensorFlow, which is blocked here.
  result = subprocess.run(
      [sys.executable, "-c", script, "decompress", "--runtime=tf", str(tmp_path / "rgb.tflic"),
       str(tmp_path / "tf.png")], cwd=tmp_path, env=env, capture_output=True, text=True,
      timeout=120, check=False)
  assert result.returncode != 0 and "TensorFlow is blocked" in result.stderr


def test_the_runtime_follows_the_model_and_the_options(tmp_path):
  lite_dir = REPO / "tflic" / "bundled" / "lite"
  cases = [({}, "compress", "lite"), ({}, "decompress", "lite"),
           ({"refine_steps": 2}, "compress", "tf"), ({"refine_steps": 2}, "decompress", "lite"),
           ({"model": str(tmp_path)}, "compress", "tf"),  # a SavedModel or training directory
           ({"model": str(lite_dir)}, "decompress", "lite"),
           ({"runtime": "tf"}, "decompress", "tf"), ({"runtime": "lite"}, "compress", "lite")]
  for values, command, expected in cases:
    with flagsaver.flagsaver():
      flags.FLAGS(["tflic " + command] + [f"--{k}={v}" for k, v in values.items()])
      assert codec_cli.runtime(command) == expected, (values, command)
      assert codec_cli.needs_tensorflow(command) == (expected == "tf")
      assert not codec_cli.needs_tensorflow("info")


def test_compressing_an_image_larger_than_one_tile_takes_tensorflow(tmp_path):
  """The LiteRT analysis runs in one piece: images that need tiles are compressed by the
  SavedModel (auto), or refused in one line (--runtime=lite); decoding stays on LiteRT."""
  small, large = tmp_path / "small.png", tmp_path / "large.jpg"
  Image.new("RGB", (64, 48)).save(small)
  exif = Image.Exif()
  exif[0x0112] = 6  # stored turned: upright it is 40 x 64
  Image.new("RGB", (64, 40)).save(large, exif=exif)
  with flagsaver.flagsaver():
    flags.FLAGS(["tflic compress", "--tile_memory_mib=16"])
    assert codec_cli.runtime("compress", [(48, 64)]) == "lite"
    assert codec_cli.runtime("compress", [(4000, 6000)]) == "tf"
    assert codec_cli.runtime("decompress", [(4000, 6000)]) == "lite"
    assert not codec_cli.needs_tensorflow("compress", [str(small), str(tmp_path / "o")])
    assert codec_cli.needs_tensorflow(
        "compress", [str(small), str(tmp_path / "huge.png"), str(tmp_path / "out")]) is False
  assert image_io.image_size(large) == (64, 40)
  assert image_io.image_size(tmp_path / "missing.png") is None
  with flagsaver.flagsaver():
    flags.FLAGS(["tflic compress", "--runtime=lite", "--tile_memory_mib=16"])
    with pytest.raises(errors.TflicError, match="larger than one tile"):
      codec_cli.runtime("compress", [(4000, 6000)])


@pytest.mark.parametrize("args, message", [
    (["--runtime=lite", "--refine_steps=2"], "latent refinement (--refine_steps) needs"),
    (["--runtime=lite", "--model=/nonexistent"], "--runtime=lite needs a LiteRT export"),
    (["--runtime=tf", f"--model={REPO / 'tflic' / 'bundled' / 'lite'}"],
     "is a LiteRT export; --runtime=tf needs a SavedModel"),
])
def test_runtimes_that_cannot_run_are_one_line_errors(args, message, images, tmp_path):
  status, out, err = _tflic(tmp_path, "compress", *args, images / "rgb.png", "out.tflic")
  assert status == 2 and not out
  assert err.splitlines() == [f"tflic compress: error: {err.split('error: ', 1)[1].strip()}"]
  assert message in err
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize("args, words", [
    (["compress"], ["expected IN.png", "got 0"]),
    (["compress", "rgb.png"], ["expected IN.png", "got 1"]),
    (["decompress"], ["expected IN.tflic"]),
    (["info"], ["expected IN.tflic"]),
    (["compress", "--quality=1.5", "rgb.png", "out.tflic"], ["--quality"]),
    (["compress", "--quality=-0.1", "rgb.png", "out.tflic"], ["--quality"]),
    (["compress", "--max_pixels=0", "rgb.png", "out.tflic"], ["--max_pixels"]),
    (["compress", "--refine_steps=-1", "rgb.png", "out.tflic"], ["--refine_steps"]),
    (["compress", "--target_bpp=0", "rgb.png", "out.tflic"], ["--target_bpp"]),
    (["compress", "--target_bytes=0", "rgb.png", "out.tflic"], ["--target_bytes"]),
    (["compress", "--quality=0.5", "--target_bytes=900", "rgb.png", "out.tflic"],
     ["--quality and --target_bytes exclude each other"]),
    (["compress", "--target_bpp=1", "--target_bytes=900", "rgb.png", "out.tflic"],
     ["--target_bpp and --target_bytes exclude each other"]),
    (["compress", "rgb.png", "gray.png", "out"], ["output directory out does not exist"]),
    (["compress", "rgb.png", "out/"], ["output directory out/ does not exist"]),
    (["compress", "rgb.png", "gray.png", "--out_dir=out"],
     ["output directory out (--out_dir) does not exist"]),
    (["compress", "gray.png", "--out_dir=rgb.png"], ["--out_dir=rgb.png is not a directory"]),
    (["compress", "--out_dir=a_directory.png"], ["with --out_dir, got no input"]),
    (["compress", "rgb.png", "a_directory.png", "--out_dir=a_directory.png"],
     ["--out_dir=a_directory.png and the output directory a_directory.png exclude"]),
    (["compress", "rgb.png", "rgb.tflic", "--out_dir=a_directory.png"],
     ["rgb.tflic looks like an output", "not both"]),
    (["decompress", "a.tflic", "a.png", "--out_dir=a_directory.png"],
     ["a.png looks like an output"]),
    (["info", "a.tflic", "--out_dir=a_directory.png"], ["--out_dir is for compress"]),
    (["compress", "missing.png", "out.tflic"], ["missing.png", "No such file"]),
    (["compress", "a_directory.png", "out.tflic"], ["is a directory"]),
    (["compress", "text.png", "out.tflic"], ["text.png", "not a PNG"]),
    (["compress", "truncated.png", "out.tflic"], ["truncated.png", "corrupt"]),
    (["compress", "--max_pixels=100", "rgb.png", "out.tflic"], ["more than the limit"]),
    (["compress", "rgb.png", "gray.png"], ["gray.png exists", "--overwrite"]),
    (["compress", "rgb.png", "missing_dir/out.tflic"], ["does not exist"]),
    (["decompress", "text.png", "out.png"], ["text.png", "not a tflic file"]),
    (["decompress", "missing.tflic", "out.png"], ["missing.tflic", "No such file"]),
    (["decompress", "--model=/nonexistent", "rgb.png", "rgb.png"], ["exists"]),
])
def test_usage_errors(images, monkeypatch, run_main, args, words):
  monkeypatch.chdir(images)
  before = sorted(os.listdir(images))
  status, _, err = run_main(*args)
  _assert_one_error(status, err, *words)
  assert sorted(os.listdir(images)) == before


@pytest.mark.parametrize("name, words", [
    ("truncated.tflic", ["truncated.tflic", "corrupt", "truncated"]),
    ("text.tflic", ["text.tflic", "not a tflic file"]),
    ("a.tflic", ["a.tflic", "would be 30x20", "limit of 100"]),  # --max_pixels=100
])
def test_decompress_rejects_before_loading_a_model(tflic_files, monkeypatch, run_main,
                                                   name, words):
  monkeypatch.chdir(tflic_files)
  before = sorted(os.listdir(tflic_files))
  # The model does not exist: these errors must come first.
  status, _, err = run_main("decompress", "--model=/nonexistent", "--max_pixels=100",
                            name, "out.png")
  _assert_one_error(status, err, *words)
  assert sorted(os.listdir(tflic_files)) == before


@pytest.mark.parametrize("runtime", ["tf", "lite"])
def test_decompress_checks_the_stream_length_rule_before_loading_the_model(
    runtime, tmp_path, monkeypatch, run_main):
  """A 40-byte file declaring a large image fails from its header and the entropy model
  alone: the SavedModel is never loaded, and the fast path allocates nothing for it."""
  def no_load(*args):
    raise AssertionError("the model was loaded")
  monkeypatch.setattr(codec_cli, "_load_model", no_load)
  fingerprint = bytes(8)
  if runtime == "lite":  # the bundled model's: the fast path checks the model first
    fingerprint = bytes.fromhex(json.loads(
        (REPO / "tflic" / "bundled" / "lite" / "manifest.json").read_text())["fingerprint"])
  (tmp_path / "big.tflic").write_bytes(
      bitstream.pack("wavefront", fingerprint, 4096, 4096, 0, b"", b"", 0))
  monkeypatch.chdir(tmp_path)
  status, _, err = run_main("decompress", f"--runtime={runtime}", "big.tflic", "out.png")
  _assert_one_error(status, err, "big.tflic", "cannot hold")
  assert not (tmp_path / "out.png").exists()


def test_model_error_is_reported_once(images, tmp_path, run_main):
  status, out, err = run_main("compress", "--model=/nonexistent", images / "rgb.png",
                              images / "gray.png", tmp_path)
  _assert_one_error(status, err, "/nonexistent")
  assert not out and not os.listdir(tmp_path)


def test_image_smaller_than_min_side(images, tmp_path, monkeypatch, run_main):
  monkeypatch.setattr(bitstream, "MIN_SIDE", 32)
  status, _, err = run_main("compress", "--model=/nonexistent", images / "rgb.png",
                            tmp_path / "out.tflic")
  _assert_one_error(status, err, "40x24", "minimum of 32")
  assert not os.listdir(tmp_path)


# The command line with a model.


@pytest.fixture(scope="module")
def compressed(images, tiny_workdir, tmp_path_factory):
  """A `tflic compress` process with a training directory as --model, of many kinds of
  input, two of them bad, into one directory.

  The codec is traced in the command's process, after absl's app.run has started: the
  case that needs TensorFlow imported with care. (A training directory and its export
  write the same files: test_decompress_many decodes these with the export.)
  """
  out = tmp_path_factory.mktemp("compressed")
  names = ["rgb.png", "photo.jpg", "gray.png", "rgba.png", "gray16.png", "rgb48.png",
           "text.png", "missing.png"]
  status, stdout, stderr = _tflic(images, "compress", f"--model={tiny_workdir}",
                                  "--quality=0.75", *names, out)
  return out, status, stdout, stderr


def test_compress_many(compressed, images):
  out, status, stdout, stderr = compressed
  assert status == 2, stderr
  assert "Traceback" not in stderr and "Exception ignored" not in stderr  # e.g. at exit
  errors_ = _error_lines(stderr)
  assert len(errors_) == 2, stderr
  assert "text.png" in errors_[0] and "missing.png" in errors_[1]
  for name, word in [("gray.png", "grayscale"), ("rgba.png", "alpha dropped"),
                     ("gray16.png", "16-bit"), ("rgb48.png", "16-bit")]:
    [warning] = [line for line in stderr.splitlines() if name in line and word in line]
    assert not ERROR.match(warning)
  results = _results(stdout)
  assert sorted(results) == ["gray.png", "gray16.png", "photo.jpg", "rgb.png", "rgb48.png",
                             "rgba.png"]
  for src, (dst, width, height, _, _) in results.items():
    assert dst == str(out / (src.split(".")[0] + ".tflic"))
    header, _, _ = bitstream.unpack(pathlib.Path(dst).read_bytes())
    assert (header.width, header.height) == (width, height) == Image.open(images / src).size
    assert header.quality == pytest.approx(0.75, abs=1e-4)
  _assert_bpp_of_written_files(results)
  assert sorted(os.listdir(out)) == sorted(src.split(".")[0] + ".tflic" for src in results)


def test_decompress_many(compressed, images, tiny_model_dir, tmp_path, run_main):
  out, _, _, _ = compressed
  rgb = (out / "rgb.tflic").read_bytes()
  header, z, y = bitstream.unpack(rgb)
  (tmp_path / "truncated.tflic").write_bytes(rgb[:-3])
  (tmp_path / "other_model.tflic").write_bytes(bitstream.pack(
      header.mode, b"\xff" * 8, header.height, header.width, header.quality_code, z, y,
      header.latent_check))
  decoded = tmp_path / "decoded"
  decoded.mkdir()
  (decoded / "rgb.png").write_bytes(b"an older file, replaced thanks to --overwrite")
  inputs = sorted(out.glob("*.tflic")) + [tmp_path / "truncated.tflic",
                                          tmp_path / "other_model.tflic"]
  status, stdout, stderr = run_main("decompress", f"--model={tiny_model_dir}", "--overwrite",
                                    *inputs, f"--out_dir={decoded}")
  assert status == 2, stderr
  errors_ = _error_lines(stderr)
  assert len(errors_) == 2, stderr
  assert "truncated.tflic" in errors_[0] and "corrupt" in errors_[0]
  assert "other_model.tflic" in errors_[1] and "different model" in errors_[1]
  results = _results(stdout)
  assert len(results) == len(inputs) - 2
  _assert_bpp_of_written_files(results)
  for src, (dst, width, height, _, _) in results.items():
    stem = pathlib.Path(src).stem
    assert dst == str(decoded / (stem + ".png"))
    source = next(images.glob(stem + ".*"))
    with Image.open(dst) as png:
      assert png.format == "PNG" and png.mode == "RGB"
      assert png.size == (width, height) == Image.open(source).size
  assert sorted(os.listdir(decoded)) == sorted(pathlib.Path(s).stem + ".png" for s in results)


def test_single_file_round_trip(images, tiny_model_dir, tiny_codec, tmp_path, run_main):
  tflic_file, png_file = tmp_path / "one.tflic", tmp_path / "one.png"
  status, out, err = run_main("compress", f"--model={tiny_model_dir}", "--quality=0.9",
                              images / "rgb.png", tflic_file)
  assert status == 0, err
  results = _results(out)
  assert results[str(images / "rgb.png")][:3] == (str(tflic_file), 40, 24)
  _assert_bpp_of_written_files(results)
  header, _, _ = bitstream.unpack(tflic_file.read_bytes())
  assert header.quality == pytest.approx(0.9, abs=1e-4)
  refined_file = tmp_path / "refined.tflic"
  status, _, err = run_main("compress", f"--model={tiny_model_dir}", "--quality=0.9",
                            "--refine_steps=2", images / "rgb.png", refined_file)
  assert status == 0, err
  assert refined_file.read_bytes() == tiny_codec.compress(
      image_io.read_image(images / "rgb.png"), 0.9, refine_steps=2)
  refined_file.unlink()

  status, out, err = run_main("decompress", f"--model={tiny_model_dir}", tflic_file,
                              png_file)
  assert status == 0, err
  _assert_bpp_of_written_files(_results(out))
  assert image_io.read_image(png_file).shape == RGB.shape
  assert sorted(os.listdir(tmp_path)) == ["one.png", "one.tflic"]


def test_compress_to_a_size_budget(images, tiny_model_dir, tiny_codec, tmp_path, run_main):
  model = tiny_codec
  smallest, largest = (len(model.compress(RGB, q)) for q in (0.0, 1.0))
  assert smallest < largest
  budget = (smallest + largest) // 2
  out = tmp_path / "fit.tflic"
  status, stdout, err = run_main("compress", f"--model={tiny_model_dir}",
                                 f"--target_bytes={budget}", images / "rgb.png", out)
  assert status == 0, err
  # The result line, with the quality found.
  m = re.match(RESULT.pattern.rstrip("$") + r", quality ([\d.]+)$", stdout.strip())
  assert m, stdout
  data = out.read_bytes()
  assert len(data) == int(m[5]) <= budget
  header, _, _ = bitstream.unpack(data)
  assert f"{header.quality:.4f}" == m[7]
  assert data == model.compress(RGB, header.quality)  # coded at the quality it reports

  # Below the smallest file (quality 0): one error line, no file.
  bpp = (smallest - 1) * 8 / RGB.shape[0] / RGB.shape[1]
  status, _, err = run_main("compress", f"--model={tiny_model_dir}", f"--target_bpp={bpp}",
                            images / "rgb.png", tmp_path / "none.tflic")
  _assert_one_error(status, err, "rgb.png", "no quality fits", f"has {smallest} bytes")
  assert os.listdir(tmp_path) == ["fit.tflic"]

