r"""Measures encode/decode seconds of a model on real images, and where decoding spends time.

  python benchmarks/codec_speed.py --images=../shared/data/kodak --qualities=0,1
  python benchmarks/codec_speed.py --baseline=/work/base --images=../shared/data/kodak \
      --qualities=0,1 --repeats=1     # side by side with another checkout

--model takes a training directory or an exported SavedModel (default: the bundled
model). For each image and quality: bpp (from the file), PSNR, encode and decode seconds
(median of --repeats, after one warm-up call that traces the functions), and the split of
the decode time into entropy decoding (`decode_latent`: z, h_s, the context model and the
range decoder) and the rest (the synthesis).

With --baseline (a checkout of another commit, with its extensions built in place) each
checkout runs in a worker process of its own (its `tflic` on PYTHONPATH, its bundled
model unless --baseline_model is given); the two take turns image by image, so both see
the same machine load, and the report gives both medians per image and their ratio.
"""

import json
import os
import pathlib
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np

_MODEL = flags.DEFINE_string("model", None, "Training directory or SavedModel "
                             "(default: the bundled model).")
_IMAGES = flags.DEFINE_string("images", "../shared/data/kodak/kodim01.png",
                              "Image file, folder or glob.")
_QUALITIES = flags.DEFINE_list("qualities", ["0.5"], "Qualities to measure.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repetitions (median reported).")
_BASELINE = flags.DEFINE_string("baseline", None, "Another checkout to measure side by side.")
_BASELINE_MODEL = flags.DEFINE_string("baseline_model", None,
                                      "Its model (default: its bundled model).")
_WORKER = flags.DEFINE_bool("worker", False, "Internal: answer measurement requests.")

REPO = pathlib.Path(__file__).resolve().parents[1]


def _median_seconds(fn, repeats):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    result = fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times)), result


class _Measurer:
  """Encodes and decodes images with one codec; traced once per image size."""

  def __init__(self, model):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from tflic import codec  # pylint: disable=g-import-not-at-top  (any checkout's API)
    self.tf = tf
    self.codec = codec.load(model or codec.default_model_path())
    self.warm = set()

  def measure(self, path, quality, repeats):
    try:
      from tflic.codec import image_io  # pylint: disable=g-import-not-at-top
    except ImportError:  # a checkout from before tflic/codec/ (e.g. 005fbc2)
      from tflic import image_io  # pylint: disable=g-import-not-at-top
    image = image_io.read_image(path)
    height, width = image.shape[:2]
    module = self.codec.module
    if (height, width) not in self.warm:  # warm-up / tracing
      bitstream = self.codec.compress(image, quality)
      self.codec.decompress(bitstream)
      module.decode_latent(self.tf.constant(bitstream))
      self.warm.add((height, width))
    encode, bitstream = _median_seconds(lambda: self.codec.compress(image, quality), repeats)
    decode, decoded = _median_seconds(lambda: self.codec.decompress(bitstream), repeats)
    latent, _ = _median_seconds(lambda: module.decode_latent(self.tf.constant(bitstream)),
                                repeats)
    mse = np.mean((decoded.astype(np.float64) - image) ** 2)
    return {"path": str(path), "width": int(width), "height": int(height),
            "quality": quality, "bytes": len(bitstream),
            "bpp": 8 * len(bitstream) / (height * width),
            "psnr": float(10 * np.log10(255.0**2 / mse)) if mse else float("inf"),
            "encode": encode, "decode": decode, "entropy_decode": latent,
            "synthesis": decode - latent}


def _worker():
  """Measures what stdin asks (one JSON request a line), answering one JSON line each."""
  measurer = _Measurer(_MODEL.value)
  print(json.dumps({"ready": True}), flush=True)
  for line in sys.stdin:
    request = json.loads(line)
    print(json.dumps(measurer.measure(request["path"], request["quality"],
                                      request["repeats"])), flush=True)


def _start(checkout, model):
  env = dict(os.environ, PYTHONPATH=str(checkout), TF_CPP_MIN_LOG_LEVEL="3")
  args = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker"]
  if model:
    args.append(f"--model={model}")
  process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env=env, cwd=str(checkout))
  if "ready" not in json.loads(_answer(process)):
    raise RuntimeError(f"worker of {checkout} did not start")
  return process


def _answer(process):
  for line in process.stdout:
    if line.startswith("{"):
      return line
  raise RuntimeError("a worker stopped")


def _ask(process, path, quality):
  process.stdin.write(json.dumps({"path": str(path), "quality": quality,
                                  "repeats": _REPEATS.value}) + "\n")
  process.stdin.flush()
  return json.loads(_answer(process))


def _line(r):
  return (f"{r['path']} {r['width']}x{r['height']} q={r['quality']}: {r['bpp']:.4f} bpp, "
          f"{r['psnr']:.2f} dB, encode {r['encode']:.2f} s, decode {r['decode']:.2f} s "
          f"(entropy decoding {r['entropy_decode']:.2f} s, synthesis {r['synthesis']:.2f} s)")


def _side_by_side(paths):
  workers = {"baseline": _start(pathlib.Path(_BASELINE.value).resolve(),
                                _BASELINE_MODEL.value),
             "this": _start(REPO, _MODEL.value)}
  rows = []
  for path in paths:
    for quality in map(float, _QUALITIES.value):
      row = {name: _ask(process, path, quality) for name, process in workers.items()}
      row["same_file_size"] = row["baseline"]["bytes"] == row["this"]["bytes"]
      rows.append(row)
      for name in workers:
        print(f"{name:8s} {_line(row[name])}", flush=True)
  for process in workers.values():
    process.stdin.close()
    process.wait()
  print(f"\nmedian per image over {len(rows)} (image, quality) pairs:")
  for key in ("encode", "decode", "entropy_decode", "synthesis"):
    old = float(np.median([r["baseline"][key] for r in rows]))
    new = float(np.median([r["this"][key] for r in rows]))
    print(f"  {key:15s} baseline {old:.3f} s, this {new:.3f} s, {old / new:.1f}x")
  print(f"  same file sizes: {sum(r['same_file_size'] for r in rows)} of {len(rows)}")


def main(argv):
  del argv
  if _WORKER.value:
    _worker()
    return
  from tflic.training import data  # pylint: disable=g-import-not-at-top
  paths = list(data.image_files(_IMAGES.value))
  if _BASELINE.value:
    _side_by_side(paths)
    return
  measurer = _Measurer(_MODEL.value)
  for path in paths:
    for quality in map(float, _QUALITIES.value):
      print(_line(measurer.measure(path, quality, _REPEATS.value)), flush=True)


if __name__ == "__main__":
  app.run(main)
