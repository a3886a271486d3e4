r"""The TF-free decoder (tflic.lite) against the SavedModel on real files.

  python -m export.tflite --out=/tmp/tflic_lite          # the bundled model's LiteRT export
  python -m export.serving --out=/tmp/tflic_serving      # optional: split encoder check
  python benchmarks/lite_decoder.py --lite=/tmp/tflic_lite \
      [--serving=/tmp/tflic_serving] --out=reports/lite_decoder_kodak

A benchmark, not a test (about 30 minutes on 2 CPU cores). For every Kodak image x
quality, plus crops of kodim01 of sizes 1x1, 17x300, 300x17 and 97x131, the SavedModel
writes a file; then
- the SavedModel decodes it (`decode_latent` for its latents, `decompress` timed);
- tflic.lite decodes it (entropy decoding and LiteRT synthesis timed apart): its latents
  must equal the SavedModel's exactly, and the PSNR of its image (against the original)
  is compared with the SavedModel image's;
- with --serving, the split encoder (stock-op networks + the client's entropy coder)
  encodes the same image: its file must equal the SavedModel's byte for byte.
Writes results.json and report.md to --out, with the .tflite size and the install size of
the decoder's packages. Run it with nothing else on the CPU: its seconds are measurements.
"""

import json
import os
import pathlib
import sys
import time

from absl import app
from absl import flags
import numpy as np

_MODEL = flags.DEFINE_string("model", None, "SavedModel (default: the bundled model).")
_LITE = flags.DEFINE_string("lite", None, "Its LiteRT export (python -m export.tflite).",
                            required=True)
_SERVING = flags.DEFINE_string("serving", None, "Optional: its TF Serving base path "
                               "(python -m export.serving), to check the split encoder.")
_IMAGES = flags.DEFINE_string("images", "../shared/data/kodak", "Kodak folder.")
_QUALITIES = flags.DEFINE_list("qualities", ["0", "0.25", "0.5", "0.75", "1"], "Qualities.")
_LIMIT = flags.DEFINE_integer("limit", None, "Only the first N images (a quick run).")
_OUT = flags.DEFINE_string("out", "reports/lite_decoder_kodak", "Output folder.")

ODD_SIZES = [(1, 1), (17, 300), (300, 17), (97, 131)]


def _items():
  """(name, image) of every test image: Kodak, then the odd-size crops of kodim01."""
  from tflic.codec import image_io  # pylint: disable=g-import-not-at-top
  paths = sorted(pathlib.Path(_IMAGES.value).glob("*.png"))[:_LIMIT.value]
  items = [(p.stem, image_io.read_image(p)) for p in paths]
  first = items[0][1]
  return items + [(f"{items[0][0]}_{h}x{w}", first[:h, :w]) for h, w in ODD_SIZES]


def _psnr(a, b):
  mse = np.mean((a.astype(np.float64) - b) ** 2)
  return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _install_size(modules):
  """Bytes on disk of the packages (top-level folders) that hold `modules`."""
  import importlib  # pylint: disable=g-import-not-at-top
  sizes = {}
  for name in modules:
    path = pathlib.Path(importlib.import_module(name).__file__).parent
    sizes[name] = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
  return sizes


def _median(values):
  return float(np.median(values)) if values else None


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tflic.codec import tf_codec  # pylint: disable=g-import-not-at-top
  from tflic.lite import decoder as decoder_lib  # pylint: disable=g-import-not-at-top
  the_codec = tf_codec.load(_MODEL.value or tf_codec.default_model_path())
  lite = decoder_lib.Decoder(_LITE.value)
  split = None
  if _SERVING.value:
    from tflic.deploy import serving_client  # pylint: disable=g-import-not-at-top
    split = serving_client.SplitEncoder(_SERVING.value)
  items = _items()
  warm_up = the_codec.compress(items[0][1][:64, :64], 0.5)  # traces the tf.functions
  the_codec.decompress(warm_up)
  the_codec.module.decode_latent(tf.constant(warm_up))
  lite.decompress(warm_up)
  if split is not None:
    split.compress(items[0][1][:64, :64], 0.5)
  results = {}
  for name, image in items:
    for quality in _QUALITIES.value:
      key = f"{name}@{quality}"
      data = the_codec.compress(image, float(quality))
      expected = the_codec.module.decode_latent(tf.constant(data))["y_hat"].numpy()
      start = time.perf_counter()
      reference_image = the_codec.decompress(data)
      savedmodel_seconds = time.perf_counter() - start
      start = time.perf_counter()
      header, y_hat = lite.decode_latent(data)
      middle = time.perf_counter()
      lite_image = lite.synthesize(header, y_hat)
      end = time.perf_counter()
      result = {
          "bytes": len(data), "pixels": int(image.shape[0] * image.shape[1]),
          "same_latents": bool(np.array_equal(y_hat, expected)),
          "psnr_savedmodel": _psnr(reference_image, image),
          "psnr_lite": _psnr(lite_image, image),
          "max_pixel_difference": int(np.abs(lite_image.astype(int) - reference_image).max()),
          "savedmodel_decode_seconds": savedmodel_seconds,
          "lite_entropy_seconds": middle - start, "lite_synthesis_seconds": end - middle,
          "lite_decode_seconds": end - start,
      }
      if split is not None:
        result["split_identical"] = split.compress(image, float(quality)) == data
      results[key] = result
      print(key, json.dumps(result), flush=True)
  _write(results, split is not None)


def _write(results, with_split):
  out = pathlib.Path(_OUT.value)
  out.mkdir(parents=True, exist_ok=True)
  manifest = json.loads((pathlib.Path(_LITE.value) / "manifest.json").read_text())
  kodak = [r for k, r in results.items() if "_" not in k.split("@")[0]]
  psnr_gap = [abs(r["psnr_lite"] - r["psnr_savedmodel"]) for r in results.values()
              if np.isfinite(r["psnr_lite"]) and np.isfinite(r["psnr_savedmodel"])]
  summary = {
      "files": len(results),
      "same_latents": sum(r["same_latents"] for r in results.values()),
      "max_psnr_gap_db": max(psnr_gap),
      "max_pixel_difference": max(r["max_pixel_difference"] for r in results.values()),
      "kodak_median_seconds": {
          k: _median([r[k] for r in kodak]) for k in (
              "savedmodel_decode_seconds", "lite_decode_seconds", "lite_entropy_seconds",
              "lite_synthesis_seconds")},
      "tflite_bytes": {role: f["bytes"] for role, f in manifest["files"].items()},
      "install_bytes": _install_size(["ai_edge_litert", "numpy", "PIL", "tflic.lite",
                                      "tflic.codec.rangecoder", "tflic.codec.deterministic"]),
      "tensorflow_install_bytes": _install_size(["tensorflow", "tensorflow_compression"]),
  }
  if with_split:
    summary["split_identical"] = sum(r["split_identical"] for r in results.values())
  (out / "results.json").write_text(json.dumps({"summary": summary, "files": results},
                                               indent=1) + "\n")
  seconds = summary["kodak_median_seconds"]
  lines = [
      "# tflic.lite against the SavedModel", "",
      f"Command: `python benchmarks/lite_decoder.py {' '.join(sys.argv[1:])}`", "",
      f"- files: {summary['files']} (Kodak x {len(_QUALITIES.value)} qualities, plus crops)",
      f"- identical latents: {summary['same_latents']}/{summary['files']}",
      f"- largest PSNR gap (LiteRT vs SavedModel image, each against the original): "
      f"{summary['max_psnr_gap_db']:.4f} dB; largest pixel difference "
      f"{summary['max_pixel_difference']} levels",
      f"- Kodak median decode seconds: SavedModel {seconds['savedmodel_decode_seconds']:.3f}, "
      f"tflic.lite {seconds['lite_decode_seconds']:.3f} (entropy "
      f"{seconds['lite_entropy_seconds']:.3f} + LiteRT synthesis "
      f"{seconds['lite_synthesis_seconds']:.3f})",
      f"- export files (bytes): {summary['tflite_bytes']}",
      f"- decoder packages on disk (bytes): {summary['install_bytes']}; TensorFlow and tfc: "
      f"{summary['tensorflow_install_bytes']}",
  ]
  if with_split:
    lines.append(f"- split encoder files byte-identical to the SavedModel's: "
                 f"{summary['split_identical']}/{summary['files']}")
  (out / "report.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  app.run(main)
