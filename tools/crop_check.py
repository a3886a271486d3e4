r"""A quick rate-distortion check of a training checkpoint on Kodak crops.

  python tools/crop_check.py --workdir=runs/medium [--workdir=runs/other ...]

For each training directory, the latest checkpoint's parallel pass (the decoder-like
rounded context, `TflicModel.reconstruct(coded=False)`, whose bits are close to a file's)
codes 256x256 centre crops of eight Kodak images at the trained lambdas' qualities; JPEG
4:2:0 and WebP code the same crops. Rows average bpp and PSNR over the crops, as
`tflic eval` does. It prints one line per directory: step, the BD-rates, the ends of the
rate range, and the PSNR of the synthesis of the unquantized latent at the top quality
(the transforms' ceiling). A checkpoint that keeps a moving average of the weights
(`average_decay`) gets a second line for the average. With several directories, it also
gives each one's BD-rate and BD-PSNR against the first (e.g. two architectures trained
alike). Minutes, not the hour of a full Kodak `tflic eval`: for
comparing candidates and watching a run, not for the README's numbers.
"""

import json
import math
import os

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from tflic import cli
from tflic.codec import image_io
from tflic import errors
from tflic.evaluation import bdrate
from tflic.evaluation import codecs
from tflic.model import checkpoint

_WORKDIRS = flags.DEFINE_multi_string("workdir", None, "Training directories to check.")
_KODAK = flags.DEFINE_string("kodak", "../shared/data/kodak", "The Kodak images.")
_IMAGES = flags.DEFINE_list("images", ["01", "03", "05", "07", "12", "15", "19", "23"],
                            "Kodak image numbers to crop.")
_SIZE = flags.DEFINE_integer("size", 256, "Side of the centre crops (a multiple of 16).")
_JSON = flags.DEFINE_string("json", None, "Also append each result as a JSON line here.")

JPEG_QUALITIES = (20, 30, 40, 50, 60, 70, 80, 90, 95)
WEBP_QUALITIES = (10, 25, 40, 55, 70, 80, 90, 95)


def crops(kodak, numbers, size):
  """Centre crops [size, size, 3] uint8 of kodimNN.png."""
  out = []
  for number in numbers:
    image = image_io.read_image(os.path.join(kodak, f"kodim{number}.png"))
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    out.append(image[top:top + size, left:left + size])
  return out


def _psnr(a, b):
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return 10 * np.log10(255.0 ** 2 / mse)


def classical_curve(codec, settings, images):
  """(mean bpp, mean PSNR) per setting of a classical codec."""
  rates, psnrs = [], []
  for setting in settings:
    files = [codec.encode(image, setting) for image in images]
    rates.append(np.mean([8 * len(f) / image[..., 0].size for f, image in zip(files, images)]))
    psnrs.append(np.mean([_psnr(image, codec.decode(f)) for f, image in zip(files, images)]))
  return rates, psnrs


def model_curve(model, images):
  """(mean bpp, mean PSNR) at the trained lambdas, and the top quality's ceiling PSNR."""
  x = tf.constant(np.stack(images), tf.float32) / 255.0
  pixels = images[0][..., 0].size
  reconstruct = tf.function(lambda x, q: model.reconstruct(x, q, coded=False))
  rates, psnrs = [], []
  for i in range(model.num_lambdas):
    x_hat, bits = reconstruct(x, tf.constant(i / (model.num_lambdas - 1)))
    decoded = np.round(np.clip(x_hat.numpy(), 0, 1) * 255).astype(np.uint8)
    rates.append(float(np.mean(bits.numpy())) / pixels)
    psnrs.append(np.mean([_psnr(a, b) for a, b in zip(images, decoded)]))
  log_gain = model.log_gain(1.0)
  x_ceiling = model.synthesize(model.analysis(x) * tf.exp(log_gain), log_gain)
  ceiling = np.round(np.clip(x_ceiling.numpy(), 0, 1) * 255).astype(np.uint8)
  return rates, psnrs, float(np.mean([_psnr(a, b) for a, b in zip(images, ceiling)]))


def _shown(bd, unit="%", digits=1):
  """A BD result as printed: the value, with the reason or caveat when there is one."""
  value = "n/a" if math.isnan(bd.value) else f"{bd.value:+.{digits}f}{unit}"
  return f"{value} ({bd.note})" if bd.note else value


def _models(workdirs):
  """(workdir, average) to check: each workdir's weights, then their average if kept."""
  for workdir in workdirs:
    yield workdir, False
    latest = checkpoint.latest_checkpoint(workdir)
    if latest and checkpoint.has_average(latest):
      yield workdir, True


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _WORKDIRS.value:
    raise errors.TflicError("--workdir is required")
  images = crops(_KODAK.value, _IMAGES.value, _SIZE.value)
  anchors = {"jpeg": classical_curve(codecs.JpegCodec(), JPEG_QUALITIES, images),
             "webp": classical_curve(codecs.WebpCodec(), WEBP_QUALITIES, images)}
  first = None  # (label, rates, psnrs) of the first model
  for workdir, average in _models(_WORKDIRS.value):
    cfg, model, step = checkpoint.restore_model(workdir, average=average)
    rates, psnrs, ceiling = model_curve(model, images)
    label = f"{workdir} (average)" if average else workdir
    result = {"workdir": workdir, "average": average, "config": cfg.name, "step": step,
              "params": model.count_params(), "bpp": rates, "psnr": psnrs,
              "ceiling_psnr": ceiling}
    shown = {}
    for name, (anchor_rates, anchor_psnrs) in anchors.items():
      bd = bdrate.bd_rate(anchor_rates, anchor_psnrs, rates, psnrs)
      result[f"bd_rate_{name}"] = bd.value
      shown[name] = _shown(bd)
    versus_first = ""
    if first is None:
      first = (label, rates, psnrs)
    else:
      bd = bdrate.bd_rate(first[1], first[2], rates, psnrs)
      psnr = bdrate.bd_quality(first[1], first[2], rates, psnrs)
      result["bd_rate_first"], result["bd_psnr_first"] = bd.value, psnr.value
      versus_first = (f"; {_shown(bd)}, BD-PSNR {_shown(psnr, ' dB', 2)} "
                      f"vs {first[0]}")
    print(f"{label} ({cfg.name}, step {step}, {model.count_params():,} parameters): "
          f"BD-rate {shown['jpeg']} vs JPEG, {shown['webp']} vs WebP{versus_first}; "
          f"{rates[0]:.3f} bpp {psnrs[0]:.2f} dB .. {rates[-1]:.3f} bpp {psnrs[-1]:.2f} dB; "
          f"ceiling {ceiling:.2f} dB", flush=True)
    if _JSON.value:
      with open(_JSON.value, "a", encoding="utf-8") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
  app.run(cli.guarded(main, "crop_check"))
