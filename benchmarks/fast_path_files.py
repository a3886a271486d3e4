r"""The fast path's files against the SavedModel's: both read both, to the same latents.

  python benchmarks/fast_path_files.py --out=reports/fast_path_files

For every Kodak image x quality, plus crops of kodim01 of sizes 1x1, 17x300, 300x17 and
97x131 (the items of benchmarks/determinism.py, 140 at five qualities):
- the SavedModel (TensorFlow) and the fast path (`tflic.lite.encoder`: LiteRT analysis,
  the C entropy core) each encode it;
- the SavedModel's file is decoded by the fast path's decoder (`tflic.lite.decoder`, what
  `tflic decompress` and `tflic-lite` run) and by the SavedModel: the latents must be
  identical;
- the fast path's file is decoded by both as well (identical latents), and all of them
  once more by the `tflic-lite` command, whose PNGs must be the in-process decoder's;
- sizes and PSNR of the two encoders' files on Kodak, per quality.
Writes results.json and report.md to --out.
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

from absl import app
from absl import flags
import numpy as np

_IMAGES = flags.DEFINE_string("images", "../shared/data/kodak", "Kodak folder.")
_QUALITIES = flags.DEFINE_list("qualities", ["0", "0.25", "0.5", "0.75", "1"], "Qualities.")
_OUT = flags.DEFINE_string("out", None, "Output folder.")
ODD_SIZES = [(1, 1), (17, 300), (300, 17), (97, 131)]


def _psnr(a, b):
  mse = np.mean((a.astype(np.float64) - b) ** 2)
  return float(10 * np.log10(255.0**2 / mse)) if mse else float("inf")


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  import tflic  # pylint: disable=g-import-not-at-top
  from tflic.codec import image_io  # pylint: disable=g-import-not-at-top
  from tflic.codec import tf_codec  # pylint: disable=g-import-not-at-top
  from tflic.lite import decoder as decoder_lib  # pylint: disable=g-import-not-at-top
  from tflic.lite import encoder as encoder_lib  # pylint: disable=g-import-not-at-top

  lite_dir = os.path.join(tflic.BUNDLED_DIR, "lite")
  saved = tf_codec.load(tf_codec.default_model_path())
  encoder, decoder = encoder_lib.Encoder(lite_dir), decoder_lib.Decoder(lite_dir)
  paths = sorted(pathlib.Path(_IMAGES.value).glob("*.png"))
  items = [(p.stem, image_io.read_image(p)) for p in paths]
  first = items[0][1]
  items += [(f"{items[0][0]}_{h}x{w}", first[:h, :w]) for h, w in ODD_SIZES]

  def latents(data):
    return saved.module.decode_latent(tf.constant(data))["y_hat"].numpy()

  rows = []
  with tempfile.TemporaryDirectory(prefix="fast-path-files-") as scratch:
    for name, image in items:
      for quality in map(float, _QUALITIES.value):
        files = {"tf": saved.compress(image, quality), "lite": encoder.compress(image, quality)}
        row = {"image": name, "quality": quality, "same_bytes": files["tf"] == files["lite"]}
        for writer, data in files.items():
          expected = latents(data)  # the SavedModel decodes it
          row[f"{writer}_bytes"] = len(data)
          row[f"{writer}_file_same_latents"] = bool(
              np.array_equal(decoder.decode_latent(data)[1], expected))
          pixels = decoder.decompress(data)
          row[f"{writer}_psnr"] = _psnr(pixels, image)
          row[f"{writer}_tf_decode_max_difference"] = int(
              np.abs(saved.decompress(data).astype(int) - pixels).max())
          stem = f"{name}_q{quality}_{writer}"
          with open(os.path.join(scratch, stem + ".tflic"), "wb") as f:
            f.write(data)
          np.save(os.path.join(scratch, stem + ".npy"), pixels)
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = os.path.join(scratch, "png")
    os.mkdir(out)
    coded = sorted(str(p) for p in pathlib.Path(scratch).glob("*.tflic"))
    result = subprocess.run([sys.executable, "-m", "tflic.lite.cli", "decompress",
                             f"--model={lite_dir}", *coded, out], capture_output=True,
                            text=True, check=False)
    lite_cli_same = sum(
        np.array_equal(np.asarray(Image.open(os.path.join(out, pathlib.Path(p).stem + ".png"))),
                       np.load(p[:-len(".tflic")] + ".npy"))
        for p in coded if os.path.exists(os.path.join(out, pathlib.Path(p).stem + ".png")))
  kodak = [r for r in rows if "_" not in r["image"]]
  per_quality = {}
  for quality in map(float, _QUALITIES.value):
    sel = [r for r in kodak if r["quality"] == quality]
    tf_bytes, lite_bytes = sum(r["tf_bytes"] for r in sel), sum(r["lite_bytes"] for r in sel)
    per_quality[quality] = {
        "same_bytes": sum(r["same_bytes"] for r in sel), "images": len(sel),
        "size_difference_percent": 100 * (lite_bytes / tf_bytes - 1),
        "mean_psnr_difference_db": float(np.mean([r["lite_psnr"] - r["tf_psnr"] for r in sel])),
        "max_abs_psnr_difference_db": float(max(abs(r["lite_psnr"] - r["tf_psnr"]) for r in sel))}
  summary = {
      "files": len(rows),
      "tf_files_same_latents_on_fast_path": sum(r["tf_file_same_latents"] for r in rows),
      "lite_files_same_latents_on_both": sum(r["lite_file_same_latents"] for r in rows),
      "same_bytes": sum(r["same_bytes"] for r in rows),
      "max_pixel_difference_tf_vs_lite_decoder": max(
          max(r["tf_tf_decode_max_difference"], r["lite_tf_decode_max_difference"]) for r in rows),
      "tflic_lite_cli_status": result.returncode,
      "tflic_lite_cli_same_pixels": int(lite_cli_same), "tflic_lite_cli_files": len(coded),
      "kodak_per_quality": per_quality}
  lines = [f"{summary['files']} items (24 Kodak images and 4 crops x {len(_QUALITIES.value)} "
           "qualities), bundled model.",
           f"- SavedModel files decoded by the fast path to identical latents: "
           f"{summary['tf_files_same_latents_on_fast_path']}/{summary['files']}",
           f"- fast-path files decoded by the SavedModel and the fast path to identical "
           f"latents: {summary['lite_files_same_latents_on_both']}/{summary['files']}",
           f"- fast-path files byte-identical to the SavedModel's: "
           f"{summary['same_bytes']}/{summary['files']}",
           f"- tflic-lite (one call, all {len(coded)} files): exit {result.returncode}, "
           f"{lite_cli_same} PNGs equal to the in-process decoder's",
           f"- largest pixel difference, SavedModel vs fast-path decoder: "
           f"{summary['max_pixel_difference_tf_vs_lite_decoder']}", "",
           "| quality | same bytes | size, fast vs SavedModel | mean PSNR difference dB | "
           "max abs PSNR difference dB |", "|---|---|---|---|---|"]
  for quality, q in per_quality.items():
    lines.append(f"| {quality} | {q['same_bytes']}/{q['images']} | "
                 f"{q['size_difference_percent']:+.4f}% | {q['mean_psnr_difference_db']:+.5f} | "
                 f"{q['max_abs_psnr_difference_db']:.5f} |")
  report = "\n".join(lines)
  print(report)
  if _OUT.value:
    os.makedirs(_OUT.value, exist_ok=True)
    with open(os.path.join(_OUT.value, "results.json"), "w", encoding="utf-8") as f:
      json.dump({"summary": summary, "rows": rows}, f, indent=2)
    with open(os.path.join(_OUT.value, "report.md"), "w", encoding="utf-8") as f:
      f.write(report + "\n")


if __name__ == "__main__":
  app.run(main)
