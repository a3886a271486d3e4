"""Tests of tflic.evaluation: codecs, metrics, BD-rate, the harness and `tflic eval`."""

import io
import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
from PIL import Image
import pytest

from tflic import errors
from tflic.evaluation import bdrate
from tflic.evaluation import codecs
from tflic.evaluation import harness
from tflic.evaluation import main as eval_main
from tflic.evaluation import metrics
from tflic.evaluation import visual

REPO = Path(__file__).resolve().parents[1]
KODAK = Path(__file__).resolve().parents[2] / "shared/data/kodak"

needs_kodak = pytest.mark.skipif(not (KODAK / "kodim01.png").exists(),
                                 reason=f"Kodak images not found in {KODAK}")


def _psnr(a, b):
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64))**2)
  return 10 * math.log10(255**2 / mse)


def _write_crops(directory, sizes=((96, 64), (80, 72))):
  """Small test images: crops of Kodak when present, else smooth synthetic images."""
  directory.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  for i, (width, height) in enumerate(sizes):
    if (KODAK / "kodim01.png").exists():
      with Image.open(KODAK / f"kodim{i + 1:02d}.png") as image:
        crop = image.convert("RGB").crop((200, 150, 200 + width, 150 + height))
    else:
      y, x = np.mgrid[:height, :width]
      pixels = np.stack([x * 2, y * 3, (x + y) * 1.5], -1) + rng.normal(0, 8, (height, width, 3))
      crop = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    crop.save(directory / f"crop{i}.png")
  return directory


# Metrics.


def test_msssim_scales_follow_image_size():
  assert metrics.msssim_scales(512, 768) == 5
  assert metrics.msssim_scales(161, 400) == 5
  assert metrics.msssim_scales(160, 400) == 4
  assert metrics.msssim_scales(64, 96) == 3
  assert metrics.msssim_scales(11, 11) == 1
  assert metrics.msssim_scales(10, 100) == 0


def test_metrics_match_numpy_psnr_and_handle_tiny_images():
  rng = np.random.default_rng(1)
  image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
  noisy = np.clip(image + rng.integers(-6, 7, image.shape), 0, 255).astype(np.uint8)
  result = metrics.compute(image, noisy)
  assert result["psnr"] == pytest.approx(_psnr(image, noisy), abs=1e-3)
  assert result["msssim_scales"] == 2 and 0 < result["msssim"] < 1
  assert result["msssim_db"] == pytest.approx(-10 * math.log10(1 - result["msssim"]))
  tiny = metrics.compute(image[:8, :8], noisy[:8, :8])
  assert tiny["msssim_scales"] == 0 and math.isnan(tiny["msssim"])
  assert math.isfinite(tiny["psnr"])


# BD-rate.

ANCHOR_RATES = [0.2, 0.4, 0.8, 1.6]
ANCHOR_PSNR = [28.0, 31.1, 34.0, 36.8]


@pytest.mark.parametrize("method", ["pchip", "akima", "cubic"])
def test_bd_rate_of_a_codec_against_itself_is_zero(method):
  assert bdrate.bd_rate(ANCHOR_RATES, ANCHOR_PSNR, ANCHOR_RATES, ANCHOR_PSNR,
                        method).value == pytest.approx(0, abs=1e-9)
  assert bdrate.bd_quality(ANCHOR_RATES, ANCHOR_PSNR, ANCHOR_RATES, ANCHOR_PSNR,
                           method).value == pytest.approx(0, abs=1e-9)


@pytest.mark.parametrize("method", ["pchip", "akima", "cubic"])
def test_bd_rate_of_ten_percent_fewer_bits_is_minus_ten_percent(method):
  fewer_bits = [0.9 * r for r in ANCHOR_RATES]
  result = bdrate.bd_rate(ANCHOR_RATES, ANCHOR_PSNR, fewer_bits, ANCHOR_PSNR, method)
  assert result.value == pytest.approx(-10, abs=1e-6)
  assert result.note is None
  better = [p + 0.5 for p in ANCHOR_PSNR]
  assert bdrate.bd_quality(ANCHOR_RATES, ANCHOR_PSNR, ANCHOR_RATES, better,
                           method).value == pytest.approx(0.5, abs=1e-6)


def _vceg_m33_bd_rate(rate1, psnr1, rate2, psnr2):
  """Bjøntegaard's original VCEG-M33 formula: cubic fits of log-rate over PSNR, integrated."""
  fit1 = np.polyfit(psnr1, np.log(rate1), 3)
  fit2 = np.polyfit(psnr2, np.log(rate2), 3)
  low, high = max(min(psnr1), min(psnr2)), min(max(psnr1), max(psnr2))
  int1, int2 = np.polyint(fit1), np.polyint(fit2)
  average = ((np.polyval(int2, high) - np.polyval(int2, low)) -
             (np.polyval(int1, high) - np.polyval(int1, low))) / (high - low)
  return (math.exp(average) - 1) * 100


def test_bd_rate_cross_checks_with_the_original_formula():
  # The x265 example of the bjontegaard package's README.
  rate_anchor = [9487.76, 4593.60, 2486.44, 1358.24]
  psnr_anchor = [40.037, 38.615, 36.845, 34.851]
  rate_test = [9787.80, 4469.00, 2451.52, 1356.24]
  psnr_test = [40.121, 38.651, 36.970, 34.987]
  expected = _vceg_m33_bd_rate(rate_anchor, psnr_anchor, rate_test, psnr_test)
  assert -5 < expected < 0  # A small gain, as the curves show.
  cubic = bdrate.bd_rate(rate_anchor, psnr_anchor, rate_test, psnr_test, "cubic").value
  assert cubic == pytest.approx(expected, abs=1e-6)
  # The piecewise interpolations agree with the polynomial to a fraction of a percent here.
  assert bdrate.bd_rate(rate_anchor, psnr_anchor, rate_test, psnr_test).value == pytest.approx(
      expected, abs=0.5)


def test_bd_rate_reports_unusable_curves_as_nan():
  assert math.isnan(bdrate.bd_rate([0.5], [30], ANCHOR_RATES, ANCHOR_PSNR).value)
  result = bdrate.bd_rate(ANCHOR_RATES, [28, 31, 30, 36], ANCHOR_RATES, ANCHOR_PSNR)
  assert math.isnan(result.value) and "increase" in result.note
  far = bdrate.bd_rate(ANCHOR_RATES, ANCHOR_PSNR, ANCHOR_RATES, [p + 20 for p in ANCHOR_PSNR])
  assert math.isnan(far.value) and "no quality range" in far.note


# Codecs and the harness.


@needs_kodak
def test_jpeg_matches_a_direct_pillow_encode_and_decode(tmp_path):
  paths = [KODAK / "kodim01.png", KODAK / "kodim02.png"]
  codec = codecs.make_codec("jpeg", [50])
  results = harness.Results.open(tmp_path, KODAK)
  summary = harness.evaluate(paths, [codec], results, progress=False)
  assert summary.measured == 2 and summary.failed == 0
  for path in paths:
    original = np.asarray(Image.open(path).convert("RGB"))
    buffer = io.BytesIO()
    Image.fromarray(original).save(buffer, "JPEG", quality=50, subsampling="4:2:0",
                                   optimize=True)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    entry = results.data["codecs"]["jpeg"]["results"]["50"][path.name]
    assert entry["bytes"] == len(buffer.getvalue())
    assert entry["bpp"] == pytest.approx(len(buffer.getvalue()) * 8 / original.shape[0] /
                                         original.shape[1])
    assert entry["psnr"] == pytest.approx(_psnr(original, decoded), abs=1e-3)
    assert entry["msssim_scales"] == 5


@pytest.mark.parametrize("name", sorted(codecs.CODECS.keys() - {"tflic"}))
def test_classical_codecs_round_trip_through_their_decoders(name):
  if codecs.CODECS[name].unavailable_reason():
    pytest.skip(codecs.CODECS[name].unavailable_reason())
  rng = np.random.default_rng(2)
  y, x = np.mgrid[:48, :40]
  image = np.clip(np.stack([x * 5, y * 4, (x + y) * 2], -1) + rng.normal(0, 4, (48, 40, 3)),
                  0, 255).astype(np.uint8)
  codec = codecs.make_codec(name)
  low, high = codec.settings[0], codec.settings[-1]
  cheap, fine = (harness.measure(codec, image, s) for s in (low, high))
  assert cheap["bytes"] != fine["bytes"]
  # Whichever end of the sweep spends more bits must give the better image.
  (small, large) = sorted((cheap, fine), key=lambda e: e["bytes"])
  assert large["psnr"] > small["psnr"] > 15


def test_unreadable_image_is_reported_and_skipped(tmp_path):
  dataset = tmp_path / "data"
  dataset.mkdir()
  Image.fromarray(np.full((24, 32, 3), 120, np.uint8)).save(dataset / "good.png")
  (dataset / "garbage.png").write_bytes(b"\x89PNG but not really an image")
  results = harness.Results.open(tmp_path / "out", dataset)
  summary = harness.evaluate(harness.list_images(dataset), [codecs.make_codec("jpeg", [40])],
                             results, progress=False)
  assert list(summary.skipped_images) == ["garbage.png"]
  assert summary.measured == 1 and summary.failed == 0
  on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
  assert "garbage.png" in on_disk["skipped_images"]
  assert list(on_disk["codecs"]["jpeg"]["results"]["40"]) == ["good.png"]


class _CountingCodec(codecs.Codec):
  """A lossless test codec that counts its encodes and can simulate a Ctrl-C."""

  name = "counting"
  default_settings = (1, 2)

  def __init__(self, settings=None, interrupt_at=None):
    super().__init__(settings)
    self.encodes = 0
    self.interrupt_at = interrupt_at

  def encode(self, image, setting):
    self.encodes += 1
    if self.encodes == self.interrupt_at:
      raise KeyboardInterrupt
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()

  def decode(self, data):
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_interrupted_run_keeps_partial_results_and_resumes(tmp_path):
  dataset = _write_crops(tmp_path / "data")
  images = harness.list_images(dataset)
  out = tmp_path / "out"
  codec = _CountingCodec([1, 2], interrupt_at=3)
  with pytest.raises(KeyboardInterrupt):
    harness.evaluate(images, [codec], harness.Results.open(out, dataset), progress=False)
  partial = json.loads((out / "results.json").read_text())["codecs"]["counting"]["results"]
  assert {key: sorted(value) for key, value in partial.items()} == {
      "1": [images[0].name], "2": [images[0].name]}
  assert not list(out.glob(".*.tmp"))
  codec = _CountingCodec([1, 2])
  summary = harness.evaluate(images, [codec], harness.Results.open(out, dataset), progress=False)
  assert (codec.encodes, summary.measured, summary.reused) == (2, 2, 2)
  entries = json.loads((out / "results.json").read_text())["codecs"]["counting"]["results"]
  assert entries["1"][images[1].name]["psnr"] is None  # Lossless: infinite PSNR is stored as null.


def test_tflic_codec_plugs_in_through_tflic_codec_load(monkeypatch, tmp_path):
  calls = []

  class FakeModel:
    fingerprint = bytes.fromhex("0123456789abcdef")

    def compress(self, image, quality, refine_steps=0):
      calls.append((quality, refine_steps))
      return _CountingCodec().encode(image, quality)

    def decompress(self, data):
      return _CountingCodec().decode(data)

  fake = types.ModuleType("tflic.codec")
  fake.load = lambda path: FakeModel()
  monkeypatch.setitem(sys.modules, "tflic.codec", fake)
  codec = codecs.make_codec("tflic", [0.25, 0.75], model_path=str(tmp_path / "model"))
  image = np.full((16, 16, 3), 7, np.uint8)
  assert harness.measure(codec, image, 0.25)["bytes"] > 0 and calls == [(0.25, 0)]
  assert codec.config() == {"model_fingerprint": "0123456789abcdef"}
  refined = codecs.make_codec("tflic", [0.5], model_path=str(tmp_path / "model"),
                              refine_steps=7)
  harness.measure(refined, image, 0.5)
  assert calls[-1] == (0.5, 7) and refined.config()["refine_steps"] == 7

  def broken_load(path):
    raise FileNotFoundError(path)

  fake.load = broken_load
  with pytest.raises(errors.TflicError, match="cannot load tflic model"):
    codecs.make_codec("tflic", model_path="missing")
  fake.load = lambda path: FakeModel()
  fake.default_model_path = lambda: str(tmp_path / "bundled")
  assert codecs.make_codec("tflic").model_path == str(tmp_path / "bundled")  # no --model

  def not_bundled():
    raise errors.TflicError("no bundled model in this installation; pass --model=PATH")

  fake.default_model_path = not_bundled
  with pytest.raises(errors.TflicError, match="no bundled model"):
    codecs.make_codec("tflic")
  monkeypatch.setitem(sys.modules, "tflic.codec", None)  # Makes the import fail.
  with pytest.raises(errors.TflicError, match="cannot import tflic.codec"):
    codecs.make_codec("tflic", model_path="missing")
  with pytest.raises(errors.TflicError, match="outside"):
    codecs.make_codec("tflic", [1.5], model_path="missing")


def test_parse_qualities():
  parsed = eval_main.parse_qualities(["jpeg:10,20", "0.5"], ["jpeg", "tflic", "webp"])
  assert parsed == {"jpeg": [10, 20], "tflic": [0.5], "webp": [0.5]}
  assert eval_main.parse_qualities([], ["jpeg"]) == {"jpeg": None}
  with pytest.raises(errors.TflicError):
    eval_main.parse_qualities(["avif:10"], ["jpeg"])
  with pytest.raises(errors.TflicError):
    eval_main.parse_qualities(["jpeg:ten"], ["jpeg"])


# The command line.


def _tflic_eval(*args):
  return subprocess.run([sys.executable, "-m", "tflic.cli", "eval", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=600, check=False,
                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_cli_end_to_end_writes_everything_and_resumes(tmp_path, run_main):
  dataset = _write_crops(tmp_path / "data")
  out = tmp_path / "out"
  args = (f"--dataset={dataset}", f"--out={out}", "--codecs=jpeg,webp", "--qualities=jpeg:20,60",
          "--qualities=webp:30,80", "--published=kodak", "--noprogress")
  first = _tflic_eval(*args)
  assert first.returncode == 0, first.stderr
  assert "8 measured, 0 resumed" in first.stdout
  for name in ("results.json", "rd_table.csv", "rd_table.md", "bd.csv", "rd_psnr.png",
               "rd_msssim.png"):
    assert (out / name).stat().st_size > 0, name
  results = json.loads((out / "results.json").read_text())
  for codec, settings in (("jpeg", ["20", "60"]), ("webp", ["30", "80"])):
    table = results["codecs"][codec]["results"]
    assert sorted(table) == settings
    assert all(sorted(table[s]) == ["crop0.png", "crop1.png"] for s in settings)
  rows = (out / "rd_table.csv").read_text().splitlines()
  assert rows[0].startswith("codec,setting,images,bpp,psnr,msssim,msssim_db") and len(rows) == 5
  markdown = (out / "rd_table.md").read_text()
  assert "| webp |" in markdown and "VTM (published)" in markdown
  assert (out / "rd_psnr.png").read_bytes().startswith(b"\x89PNG")

  # Again, in this process (the command's flags and code; its process: the run above).
  status, stdout, stderr = run_main("eval", *args)
  assert status in (0, None), stderr
  assert "0 measured, 8 resumed" in stdout
  assert json.loads((out / "results.json").read_text()) == results  # Same timings: no re-encode.


def test_cli_refined_tflic_results_do_not_mix_with_plain_ones(tmp_path, tiny_model_dir,
                                                             run_main):
  # `tflic eval` in this process (the command's own process: the test above).
  dataset = _write_crops(tmp_path / "data", sizes=((48, 32),))
  out = tmp_path / "out"
  args = (f"--dataset={dataset}", f"--out={out}", "--codecs=tflic", f"--model={tiny_model_dir}",
          "--qualities=tflic:0.5", "--noprogress")
  status, _, stderr = run_main("eval", *args, "--refine_steps=2")
  assert status in (0, None), stderr
  stored = json.loads((out / "results.json").read_text())["codecs"]["tflic"]
  assert stored["config"]["refine_steps"] == 2
  assert stored["results"]["0.5"]["crop0.png"]["bytes"] > 0
  status, _, stderr = run_main("eval", *args)
  assert status == 2 and "made with other options" in stderr, stderr


def test_cli_visual_sheet_shows_each_codec_at_tflics_file_size(tmp_path, tiny_model_dir,
                                                              run_main):
  """--visual writes one PNG per named image: the original's most detailed crop, then
  tflic's and each codec's decode of it at the file size nearest tflic's."""
  dataset = _write_crops(tmp_path / "data", sizes=((128, 96), (64, 48)))
  out = tmp_path / "out"
  status, _, stderr = run_main(
      "eval", f"--dataset={dataset}", f"--out={out}", "--codecs=tflic,jpeg,webp",
      f"--model={tiny_model_dir}", "--qualities=tflic:0.2,0.8", "--visual=crop0.png",
      "--noprogress")
  assert status in (0, None), stderr
  results = json.loads((out / "results.json").read_text())
  chosen = dict(visual.choose(results, "crop0.png", ["tflic", "jpeg", "webp"], 0.25))
  tflic_bytes = results["codecs"]["tflic"]["results"][chosen["tflic"]]["crop0.png"]["bytes"]
  for name in ("jpeg", "webp"):  # no other setting of theirs is nearer in size
    sizes = {k: v["crop0.png"]["bytes"] for k, v in results["codecs"][name]["results"].items()}
    assert abs(sizes[chosen[name]] - tflic_bytes) == min(abs(b - tflic_bytes)
                                                         for b in sizes.values())
  sheet = np.asarray(Image.open(out / "visual_crop0.png"))
  crop = 96  # the sheets' 192-pixel crops, clipped to the image
  assert sheet.shape[0] == 2 * crop + visual.CAPTION_HEIGHT
  assert sheet.shape[1] == 4 * 2 * crop + 3 * visual.GAP  # original and three codecs
  original = harness.load_image(dataset / "crop0.png")
  top, left = visual.detailed_crop(original, crop)
  np.testing.assert_array_equal(sheet[:2 * crop:2, :2 * crop:2],
                                original[top:top + crop, left:left + crop])
  assert not (out / "visual_crop1.png").exists()
  assert "visual_crop0.png" in (out / "rd_table.md").read_text()
  status, _, stderr = run_main("eval", f"--dataset={dataset}", f"--out={out}",
                               "--codecs=jpeg", "--visual=nosuch.png", "--noprogress")
  assert status == 2 and "not in --dataset" in stderr, stderr


@pytest.mark.parametrize("flags, message", [
    (["--dataset=/nonexistent/images"], "does not exist"),
    (["--codecs=jpeg,nosuchcodec"], "unknown codec 'nosuchcodec'"),
])
def test_cli_bad_flags_exit_2_with_one_line(tmp_path, flags, message, run_main, capfd):
  # `tflic eval` in this process (flag parsing and errors as the command's; the command's
  # own process: the tests above).
  capfd.readouterr()  # what importing TensorFlow (run_main) logged is no part of the run
  status, _, stderr = run_main("eval", f"--dataset={tmp_path}", f"--out={tmp_path / 'out'}",
                               *flags)
  assert status == 2, stderr
  lines = stderr.strip().splitlines()
  assert len(lines) == 1 and message in lines[0], stderr
