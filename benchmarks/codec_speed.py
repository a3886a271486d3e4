r"""Measures encode/decode seconds of a model on real images, and where decoding spends time.

  python benchmarks/codec_speed.py --model=runs/tiny --images=../shared/data/kodak/kodim01.png

--model takes a training directory or an exported SavedModel. For each image and quality:
bpp (from the file), PSNR, encode and decode seconds (median of --repeats, after one
warm-up call that traces the functions), and the share of decode time spent before the
synthesis transform (z decoding, hyperprior and the context-model loop over chunks).
"""

import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from tflic import codec
from tflic import data
from tflic import image_io

_MODEL = flags.DEFINE_string("model", None, "Training directory or SavedModel.", required=True)
_IMAGES = flags.DEFINE_string("images", "../shared/data/kodak/kodim01.png",
                              "Image file, folder or glob.")
_QUALITIES = flags.DEFINE_list("qualities", ["0.5"], "Qualities to measure.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repetitions (median reported).")


def _median_seconds(fn, repeats):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    result = fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times)), result


def main(argv):
  del argv
  the_codec = codec.load(_MODEL.value)
  module = the_codec.module
  print(f"model {_MODEL.value}: decoding order {the_codec.mode}")
  for path in data.image_files(_IMAGES.value):
    image = image_io.read_image(path)
    height, width = image.shape[:2]
    for quality in map(float, _QUALITIES.value):
      bitstream = the_codec.compress(image, quality)  # warm-up / tracing
      the_codec.decompress(bitstream)
      module.decode_latent(tf.constant(bitstream))
      encode, bitstream = _median_seconds(lambda: the_codec.compress(image, quality),
                                          _REPEATS.value)
      decode, decoded = _median_seconds(lambda: the_codec.decompress(bitstream),
                                        _REPEATS.value)
      latent, _ = _median_seconds(lambda: module.decode_latent(tf.constant(bitstream)),
                                  _REPEATS.value)
      mse = np.mean((decoded.astype(np.float64) - image) ** 2)
      psnr = 10 * np.log10(255.0**2 / mse) if mse else float("inf")
      print(f"{path} {width}x{height} q={quality}: {8 * len(bitstream) / (height * width):.4f}"
            f" bpp, {psnr:.2f} dB, encode {encode:.2f} s, decode {decode:.2f} s "
            f"(entropy decoding incl. context loop {latent:.2f} s = "
            f"{100 * latent / decode:.0f}%, synthesis {decode - latent:.2f} s)", flush=True)


if __name__ == "__main__":
  app.run(main)
