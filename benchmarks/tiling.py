r"""Tiled against one-piece coding on Kodak: PSNR, file sizes and pixels at tile borders.

  python benchmarks/tiling.py --kept=16 --out=reports/tiling_kodak

Every Kodak image is compressed by the SavedModel codec in one piece and in tiles of
--kept latents (16: 256x256 pixels kept, each tile computing its margin beyond; see
tflic/codec/tiling.py), and each file is decoded both ways. Reports per image and quality the
PSNR and size of each, and the largest pixel difference between the tiled and one-piece
decodes of the same file, at tile borders (within 2 pixels of a kept region's edge) and
elsewhere: the tiles are exact, so both must be float noise alike.
"""

import json
import os
import pathlib

from absl import app
from absl import flags
import numpy as np

_MODEL = flags.DEFINE_string("model", None, "SavedModel (default: the bundled model).")
_IMAGES = flags.DEFINE_string("images", "../shared/data/kodak", "Kodak folder.")
_QUALITIES = flags.DEFINE_list("qualities", ["0", "1"], "Qualities.")
_KEPT = flags.DEFINE_integer("kept", 16, "Kept side of a tile, in latents (16 pixels).")
_OUT = flags.DEFINE_string("out", None, "Report directory (results.json, report.md).")


def _psnr(a, b):
  mse = np.mean((a.astype(np.float64) - b) ** 2)
  return 10 * np.log10(255.0**2 / mse)


def _border_mask(tiles, height, width, reach=2):
  """True within `reach` pixels of an edge between kept regions."""
  mask = np.zeros([height, width], bool)
  for tile in tiles:
    for edge in (16 * tile.keep_top, 16 * tile.keep_bottom):
      if 0 < edge < height:
        mask[max(edge - reach, 0):edge + reach] = True
    for edge in (16 * tile.keep_left, 16 * tile.keep_right):
      if 0 < edge < width:
        mask[:, max(edge - reach, 0):edge + reach] = True
  return mask


def main(argv):
  del argv
  from tflic.codec import image_io  # pylint: disable=g-import-not-at-top
  from tflic.codec import tf_codec  # pylint: disable=g-import-not-at-top
  path = _MODEL.value or tf_codec.default_model_path()
  whole = tf_codec.load(path)
  tiled = tf_codec.Codec(whole.module, tile_kept=_KEPT.value)
  rows = []
  for image_path in sorted(pathlib.Path(_IMAGES.value).glob("*.png")):
    image = image_io.read_image(image_path)
    tiles = tiled.plan(*image.shape[:2])
    border = _border_mask(tiles, *image.shape[:2])
    for quality in map(float, _QUALITIES.value):
      one = whole.compress(image, quality)
      many = tiled.compress(image, quality)
      decoded = whole.decompress(one)
      decoded_tiled = tiled.decompress(one)
      difference = np.abs(decoded.astype(int) - decoded_tiled).max(axis=2)
      row = dict(image=image_path.stem, quality=quality, tiles=len(tiles),
                 bytes=len(one), bytes_tiled=len(many), psnr=_psnr(image, decoded),
                 psnr_tiled=_psnr(image, tiled.decompress(many)),
                 max_diff_border=int(difference[border].max()),
                 max_diff_elsewhere=int(difference[~border].max()),
                 pixels_differing=int(np.count_nonzero(difference)))
      rows.append(row)
      print(json.dumps(row), flush=True)
  size = [r["bytes_tiled"] / r["bytes"] - 1 for r in rows]
  psnr = [r["psnr_tiled"] - r["psnr"] for r in rows]
  summary = dict(kept=_KEPT.value, max_abs_size_change=max(map(abs, size)),
                 max_abs_psnr_change_db=max(map(abs, psnr)),
                 identical_files=sum(r["bytes"] == r["bytes_tiled"] for r in rows),
                 files=len(rows),
                 max_diff_border=max(r["max_diff_border"] for r in rows),
                 max_diff_elsewhere=max(r["max_diff_elsewhere"] for r in rows))
  print(json.dumps(summary))
  if _OUT.value:
    os.makedirs(_OUT.value, exist_ok=True)
    with open(os.path.join(_OUT.value, "results.json"), "w") as f:
      json.dump(dict(summary=summary, rows=rows), f, indent=1)
    lines = ["# Tiled against one-piece coding (Kodak)", "",
             f"`python benchmarks/tiling.py --kept={_KEPT.value}` ({_KEPT.value * 16}x"
             f"{_KEPT.value * 16}-pixel kept tiles; the one-piece decode and the tiled "
             "decode of the same file compared pixel by pixel).", "",
             f"- files: {summary['files']}, byte-identical: {summary['identical_files']}",
             f"- largest size change: {100 * summary['max_abs_size_change']:.4f}%",
             f"- largest PSNR change: {summary['max_abs_psnr_change_db']:.5f} dB",
             f"- largest pixel difference at tile borders: {summary['max_diff_border']}, "
             f"elsewhere: {summary['max_diff_elsewhere']}", "",
             "| image | quality | tiles | bytes | tiled | PSNR | tiled | max diff border | "
             "elsewhere |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['image']} | {r['quality']:g} | {r['tiles']} | {r['bytes']} | "
              f"{r['bytes_tiled']} | {r['psnr']:.4f} | {r['psnr_tiled']:.4f} | "
              f"{r['max_diff_border']} | {r['max_diff_elsewhere']} |" for r in rows]
    with open(os.path.join(_OUT.value, "report.md"), "w") as f:
      f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
  app.run(main)
