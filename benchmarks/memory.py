r"""Peak memory (max RSS) of `tflic compress` and `tflic decompress` against image size.

  python benchmarks/memory.py --sides=256,512,1024,2048 --out=reports/memory
  python benchmarks/memory.py --sides=6000x4000,10000x10000 \
      --mosaic=../shared/data/cid22 --quality=0.5 --out=reports/memory_large

Each image is a Kodak photo resized to a square of the given side (so the content stays
natural), or with --mosaic a mosaic of that folder's photos (a large photo's content at
its own scale); sides WxH give other shapes. It is coded at --quality in a fresh process
per command, whose max RSS is read with wait4, and seconds per megapixel are reported. The report fits bytes per pixel above the fixed cost of a process (TensorFlow and
the model) and gives the largest image that fits a memory budget; that is how
`image_io.DEFAULT_MAX_PIXELS` is chosen.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np
from PIL import Image

_SIDES = flags.DEFINE_list("sides", ["256", "512", "1024", "2048"], "Square image sides.")
_IMAGE = flags.DEFINE_string("image", "../shared/data/kodak/kodim05.png", "Source photo.")
_QUALITY = flags.DEFINE_float("quality", 1.0, "Quality (the highest costs the most).")
_MODEL = flags.DEFINE_string("model", None, "Model (default: the bundled one).")
_BUDGET_GIB = flags.DEFINE_float("budget_gib", 20.0, "Memory budget for the largest image.")
_OUT = flags.DEFINE_string("out", None, "Report directory (results.json, report.md).")
_MOSAIC = flags.DEFINE_string("mosaic", None, "Folder of PNGs to tile into each image "
                              "instead of resizing --image.")


def _size(side):
  """(width, height) of a --sides entry: N (a square) or WxH."""
  width, _, height = side.partition("x")
  return int(width), int(height or width)


def _mosaic(folder, width, height):
  """An RGB image of width x height tiled with the folder's PNGs, in name order."""
  import glob  # pylint: disable=g-import-not-at-top
  paths = sorted(glob.glob(os.path.join(folder, "*.png")))
  if not paths:
    raise ValueError(f"no PNGs in {folder}")
  canvas = Image.new("RGB", (width, height))
  top, count = 0, 0
  while top < height:
    left, row_height = 0, 0
    while left < width:
      with Image.open(paths[count % len(paths)]) as photo:
        photo = photo.convert("RGB")
        canvas.paste(photo, (left, top))
        left += photo.width
        row_height = max(row_height, photo.height)
      count += 1
    top += row_height
  return canvas


def _run(args):
  """(seconds, max RSS bytes) of a command in a fresh process; raises if it fails."""
  start = time.perf_counter()
  process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  stderr = process.stderr.read()
  _, status, usage = os.wait4(process.pid, 0)
  process.returncode = os.waitstatus_to_exitcode(status)
  if process.returncode:
    raise RuntimeError(f"{' '.join(args)} failed: {stderr.decode()[-500:]}")
  return time.perf_counter() - start, usage.ru_maxrss * 1024


def main(argv):
  del argv
  model = [f"--model={_MODEL.value}"] if _MODEL.value else []
  tflic = [sys.executable, "-m", "tflic.cli"]
  source = None if _MOSAIC.value else Image.open(_IMAGE.value).convert("RGB")
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for side in _SIDES.value:
      width, height = _size(side)
      png, coded = os.path.join(tmp, f"{side}.png"), os.path.join(tmp, f"{side}.tflic")
      image = (_mosaic(_MOSAIC.value, width, height) if _MOSAIC.value else
               source.resize((width, height), Image.BICUBIC))
      image.save(png, compress_level=1)
      del image
      encode_s, encode_rss = _run(tflic + ["compress", f"--quality={_QUALITY.value}",
                                           "--max_pixels=2000000000", "--overwrite", *model,
                                           png, coded])
      decode_s, decode_rss = _run(tflic + ["decompress", "--overwrite",
                                           "--max_pixels=2000000000", *model, coded,
                                           os.path.join(tmp, f"{side}.out.png")])
      row = dict(side=side, pixels=width * height, encode_seconds=encode_s,
                 encode_rss=encode_rss, decode_seconds=decode_s, decode_rss=decode_rss,
                 bytes=os.path.getsize(coded))
      rows.append(row)
      megapixels = width * height / 1e6
      print(f"{width}x{height}: compress {encode_s:.1f} s ({encode_s / megapixels:.2f} s/MP) "
            f"{encode_rss / 2**30:.2f} GiB, decompress {decode_s:.1f} s "
            f"({decode_s / megapixels:.2f} s/MP) {decode_rss / 2**30:.2f} GiB", flush=True)
  pixels = np.array([r["pixels"] for r in rows], np.float64)
  fits = {}
  for what in ("encode", "decode"):
    rss = np.array([r[f"{what}_rss"] for r in rows], np.float64)
    per_pixel, fixed = np.polyfit(pixels, rss, 1)
    fits[what] = dict(bytes_per_pixel=per_pixel, fixed_bytes=fixed,
                      max_pixels_in_budget=int((_BUDGET_GIB.value * 2**30 - fixed) /
                                               per_pixel))
    print(f"{what}: {per_pixel:.0f} bytes/pixel + {fixed / 2**30:.2f} GiB; "
          f"{_BUDGET_GIB.value} GiB fits {fits[what]['max_pixels_in_budget']:,} pixels")
  if _OUT.value:
    os.makedirs(_OUT.value, exist_ok=True)
    with open(os.path.join(_OUT.value, "results.json"), "w") as f:
      json.dump(dict(quality=_QUALITY.value, image=_MOSAIC.value or _IMAGE.value, rows=rows,
                     fits=fits,
                     budget_gib=_BUDGET_GIB.value), f, indent=1)
    lines = ["# Peak memory against image size", "",
             f"`python benchmarks/memory.py --sides={','.join(_SIDES.value)} "
             f"--out={_OUT.value}` (quality {_QUALITY.value}, "
             f"{'a mosaic of ' + _MOSAIC.value if _MOSAIC.value else _IMAGE.value + ' resized'}"
             "; one fresh process per command; max RSS from wait4).", "",
             "| image | compress s | s/MP | compress GiB | decompress s | s/MP | "
             "decompress GiB | bytes |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['side']} | {r['encode_seconds']:.1f} | "
              f"{r['encode_seconds'] / r['pixels'] * 1e6:.2f} | "
              f"{r['encode_rss'] / 2**30:.2f} | {r['decode_seconds']:.1f} | "
              f"{r['decode_seconds'] / r['pixels'] * 1e6:.2f} | "
              f"{r['decode_rss'] / 2**30:.2f} | {r['bytes']} |" for r in rows]
    lines += ["", "Linear fit (max RSS = fixed + bytes/pixel x pixels):", ""]
    lines += [f"- {what}: {fit['bytes_per_pixel']:.0f} bytes/pixel + "
              f"{fit['fixed_bytes'] / 2**30:.2f} GiB; a {_BUDGET_GIB.value} GiB budget "
              f"fits {fit['max_pixels_in_budget']:,} pixels" for what, fit in fits.items()]
    with open(os.path.join(_OUT.value, "report.md"), "w") as f:
      f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
  app.run(main)
