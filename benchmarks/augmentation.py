r"""Training input path: tf.image crop + flip against keras-cv's layers (images/s, exactness).

  python benchmarks/augmentation.py --out=reports/augmentation
  python benchmarks/augmentation.py --dataset=tfds:train_photos --pipelines=tf_image  # tfds

Needs keras-cv, an optional extra of tflic: pip install -e '.[keras-cv]'.

Every pipeline starts as tflic.training.data.train_dataset does (decoded images cached in memory,
shuffled, repeated) and ends in batches of float32 [batch, patch, patch, 3] in [0, 1];
they differ in the augmentation between:

  tf_image              tflic.training.data.train_dataset itself: tf.image.random_crop +
                        random_flip_left_right per image (what training runs)
  keras_cv              keras_cv.layers.RandomCrop + RandomFlip("horizontal") per image
  keras_cv_batched      the same two layers on ragged batches (keras-cv's batched API;
                        the photos come in two orientations, so batches are ragged)
  tf_image_scale        a scale augmentation in tf.image: a random downscale (area,
                        factor 0.5-1) before crop + flip (downscaling also softens
                        BSDS500's JPEG artifacts)
  keras_cv_crop_resize  keras-cv's equivalent: RandomCropAndResize (crop area 0.25-1 of
                        the image, square, resized to the patch) + RandomFlip
  tf_image_jitter       tf.image crop + flip, then keras_cv.layers.RandomColorJitter
                        (brightness, contrast, saturation, hue), a candidate optional stage

Each pipeline is timed for --seconds after --warmup batches, --rounds times, the pipelines
interleaved so that a change in the machine's load hits them alike; the report gives the
median and every round, with `uptime` before each timing (other jobs share the CPU).
Exactness: the fraction of crops of a coordinate-coded image whose pixels are exactly a
window of it (possibly mirrored), i.e. a crop rather than a resampling.
"""

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from tflic.training import data

PIPELINES = ["tf_image", "keras_cv", "keras_cv_batched", "tf_image_scale",
             "keras_cv_crop_resize", "tf_image_jitter"]
_DATASET = flags.DEFINE_string("dataset", "../shared/data/train",
                               "Training images: folders/globs or tfds:NAME, as in training.")
_TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", None, "data_dir of a tfds:NAME dataset.")
_PATCH = flags.DEFINE_integer("patch_size", 128, "Crop side (the small config's).")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Batch size (the small config's).")
_SECONDS = flags.DEFINE_float("seconds", 10.0, "Timed seconds per pipeline and round.")
_WARMUP = flags.DEFINE_integer(
    "warmup", None, "Untimed batches first (tracing, cache fill); default: one pass over "
    "the images and 5 batches more, so that the timings read the in-memory cache.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Timings per pipeline, interleaved.")
_PIPELINES = flags.DEFINE_multi_enum("pipelines", PIPELINES, PIPELINES, "Pipelines to time.")
_EXACT_SAMPLES = flags.DEFINE_integer("exact_samples", 200, "Crops checked for exactness.")
_OUT = flags.DEFINE_string("out", None, "Report directory (report.md, results.json).")


def _uptime():
  try:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return "load average: %.2f, %.2f, %.2f" % os.getloadavg()


def _num_images():
  if _DATASET.value.startswith("tfds:"):
    from tflic import datasets  # pylint: disable=g-import-not-at-top
    builder = datasets.train_builder(_DATASET.value[len("tfds:"):], _TFDS_DATA_DIR.value)
    return builder.info.splits["train"].num_examples
  return len(data.image_files(_DATASET.value))


def _cached_images(patch):
  """tflic.training.data.train_dataset's images before the crop: decoded, cached (not those of a
  tfds dataset, as in training), shuffled, repeated."""
  if _DATASET.value.startswith("tfds:"):
    from tflic import datasets  # pylint: disable=g-import-not-at-top
    images = datasets.train_images(_DATASET.value[len("tfds:"):], _TFDS_DATA_DIR.value, seed=0)
    images = images.filter(lambda image: tf.reduce_all(tf.shape(image)[:2] >= patch))
    return images.shuffle(64, seed=0, reshuffle_each_iteration=True).repeat()
  files = data.image_files(_DATASET.value)
  images = tf.data.Dataset.from_tensor_slices(files).shuffle(
      len(files), seed=0, reshuffle_each_iteration=False).map(
          data._decode, num_parallel_calls=tf.data.AUTOTUNE)  # pylint: disable=protected-access
  images = images.filter(lambda image: tf.reduce_all(tf.shape(image)[:2] >= patch))
  return images.cache().shuffle(64, seed=0, reshuffle_each_iteration=True).repeat()


def _keras_cv():
  try:
    import keras_cv  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise app.UsageError("keras-cv is not installed: pip install -e '.[keras-cv]'") from None
  return keras_cv


# Augmentations of one uint8 image [H, W, 3] to a uint8 or float [patch, patch, 3] crop
# (values 0-255); `_finish` scales to [0, 1] and batches.

def _tf_crop_flip(image, patch):
  patch_image = tf.image.random_crop(image, [patch, patch, 3])
  return tf.image.random_flip_left_right(patch_image)


def _tf_scale(image, patch):
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  smallest = float(patch) / tf.reduce_min(shape)  # the image must still hold a crop
  factor = tf.random.uniform([], tf.maximum(0.5, smallest), 1.0)
  size = tf.maximum(tf.cast(tf.round(shape * factor), tf.int32), patch)
  image = tf.image.resize(image, size, method="area")
  return _tf_crop_flip(image, patch)


def _augmenters(patch):
  """name -> (per-image function or None, batched function or None)."""
  result = {"tf_image": None, "tf_image_scale": (lambda x: _tf_scale(x, patch), None)}
  keras_cv = _keras_cv()
  crop = keras_cv.layers.RandomCrop(patch, patch, seed=0)
  flip = keras_cv.layers.RandomFlip("horizontal", seed=0)
  crop_resize = keras_cv.layers.RandomCropAndResize(
      target_size=(patch, patch), crop_area_factor=(0.25, 1.0), aspect_ratio_factor=(1.0, 1.0),
      seed=0)
  jitter = keras_cv.layers.RandomColorJitter(
      value_range=(0, 255), brightness_factor=0.1, contrast_factor=0.1,
      saturation_factor=(0.4, 0.6), hue_factor=0.05, seed=0)
  result.update({
      "keras_cv": (lambda x: flip(crop(x)), None),
      "keras_cv_batched": (None, lambda x: flip(crop(x))),
      "keras_cv_crop_resize": (lambda x: flip(crop_resize(x)), None),
      "tf_image_jitter": (lambda x: jitter(_tf_crop_flip(x, patch)), None),
  })
  return result


def _pipeline(name, augmenter, patch, batch):
  if augmenter is None:
    return data.train_dataset(_DATASET.value, patch, batch, seed=0,
                              tfds_data_dir=_TFDS_DATA_DIR.value)
  per_image, batched = augmenter
  finish = lambda x: tf.cast(x, tf.float32) / 255.0
  images = _cached_images(patch)
  if per_image is not None:
    crops = images.map(lambda x: finish(per_image(x)), num_parallel_calls=tf.data.AUTOTUNE)
    return crops.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  del name
  batches = images.ragged_batch(batch, drop_remainder=True)
  return batches.map(lambda x: finish(batched(x)),
                     num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _time(iterator, batch, seconds):
  """(images/s, CPU milliseconds of this process per image) over `seconds`."""
  count, start, cpu_start = 0, time.perf_counter(), time.process_time()
  while time.perf_counter() - start < seconds:
    next(iterator)
    count += 1
  images = count * batch
  return (images / (time.perf_counter() - start),
          1000 * (time.process_time() - cpu_start) / images)


def _coordinate_image(height=321, width=481):
  """uint8 [H, W, 3] whose pixel (y, x) encodes y and x exactly (y, x < 4096)."""
  y, x = np.mgrid[:height, :width]
  return np.stack([x % 256, y % 256, (x // 256) * 16 + y // 256], -1).astype(np.uint8)


def _is_window(crop, image_height=321, image_width=481):
  """Whether a crop of _coordinate_image is exactly a window (possibly flipped)."""
  crop = np.rint(np.asarray(crop)).astype(np.int64)
  if crop.min() < 0 or crop.max() > 255:
    return False
  xs = crop[..., 0] + 256 * (crop[..., 2] // 16)
  ys = crop[..., 1] + 256 * (crop[..., 2] % 16)
  height, width = crop.shape[:2]
  rows_ok = np.all(ys == ys[0, 0] + np.arange(height)[:, None])
  forward = np.all(xs == xs[0, 0] + np.arange(width)[None, :])
  backward = np.all(xs == xs[0, 0] - np.arange(width)[None, :])
  inside = 0 <= ys.min() and ys.max() < image_height and 0 <= xs.min() and xs.max() < image_width
  return bool(rows_ok and (forward or backward) and inside)


# Pipelines that mean to crop exactly; the others resample or recolour by design.
_CROPPING = ("tf_image", "keras_cv", "keras_cv_batched")


def _exactness(name, augmenter, patch):
  """Share of exact crops, or None for a pipeline that is not meant to crop exactly."""
  if name not in _CROPPING:
    return None
  image = tf.constant(_coordinate_image())
  if augmenter is None:
    crop = lambda x: _tf_crop_flip(x, patch)
  else:
    per_image, batched = augmenter
    crop = per_image or (lambda x: batched(x[None])[0])  # a dense batch of one
  exact = sum(_is_window(crop(image)) for _ in range(_EXACT_SAMPLES.value))
  return exact / _EXACT_SAMPLES.value


def _import_seconds():
  """Seconds to import keras_cv in a fresh process that has imported TensorFlow."""
  code = ("import time, tensorflow; t = time.perf_counter(); import keras_cv; "
          "print(time.perf_counter() - t)")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), check=False)
  try:
    return float(result.stdout.strip().splitlines()[-1])
  except (ValueError, IndexError):
    return None


def main(argv):
  del argv
  patch, batch = _PATCH.value, _BATCH.value
  names = list(dict.fromkeys(_PIPELINES.value))
  augmenters = _augmenters(patch)
  iterators, errors_by_name = {}, {}
  warmup = _WARMUP.value
  if warmup is None:
    warmup = -(-_num_images() // batch) + 5
  for name in names:
    try:
      iterator = iter(_pipeline(name, augmenters[name], patch, batch))
      for _ in range(warmup):
        batch_value = next(iterator)
      if tuple(batch_value.shape) != (batch, patch, patch, 3):
        raise ValueError(f"batch of shape {tuple(batch_value.shape)}")
      iterators[name] = iterator
    except Exception as e:  # pylint: disable=broad-except
      errors_by_name[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
      print(f"{name}: failed: {errors_by_name[name]}", flush=True)
  timings = {name: [] for name in iterators}
  for round_index in range(_ROUNDS.value):
    for name, iterator in iterators.items():
      load = _uptime()
      rate, cpu_ms = _time(iterator, batch, _SECONDS.value)
      timings[name].append({"images_per_second": rate, "cpu_ms_per_image": cpu_ms,
                            "uptime": load})
      print(f"round {round_index + 1} {name}: {rate:.0f} images/s, {cpu_ms:.2f} CPU ms/image "
            f"({load})", flush=True)
  exact = {}
  for name in names:
    try:
      exact[name] = _exactness(name, augmenters[name], patch)
    except Exception as e:  # pylint: disable=broad-except
      exact[name] = None
      print(f"{name}: exactness check failed: {type(e).__name__}: {e}", flush=True)
  rows = []
  for name in names:
    rates = [t["images_per_second"] for t in timings.get(name, [])]
    cpu = [t["cpu_ms_per_image"] for t in timings.get(name, [])]
    rows.append(dict(pipeline=name, median_images_per_second=statistics.median(rates)
                     if rates else None,
                     median_cpu_ms_per_image=statistics.median(cpu) if cpu else None,
                     rounds=timings.get(name, []),
                     exact_crops=exact.get(name), error=errors_by_name.get(name)))
  keras_cv = _keras_cv()
  results = dict(command=" ".join(["python", "benchmarks/augmentation.py"] + sys.argv[1:]),
                 dataset=_DATASET.value, patch_size=patch, batch_size=batch,
                 seconds=_SECONDS.value, rounds=_ROUNDS.value,
                 tensorflow=tf.__version__, keras_cv=keras_cv.__version__,
                 keras_cv_import_seconds=_import_seconds(), cpus=os.cpu_count(), rows=rows)
  print(json.dumps({r["pipeline"]: (r["median_images_per_second"], r["exact_crops"])
                    for r in rows}))
  if _OUT.value:
    os.makedirs(_OUT.value, exist_ok=True)
    with open(os.path.join(_OUT.value, "results.json"), "w", encoding="utf-8") as f:
      json.dump(results, f, indent=1)
    with open(os.path.join(_OUT.value, "report.md"), "w", encoding="utf-8") as f:
      f.write(_report(results))
    print(f"wrote {_OUT.value}/results.json, {_OUT.value}/report.md")


def _report(results):
  base = next((r["median_images_per_second"] for r in results["rows"]
               if r["pipeline"] == "tf_image"), None)
  lines = [
      "# Training input path: tf.image against keras-cv",
      "",
      f"`{results['command']}`",
      "",
      f"{results['dataset']}, crops of {results['patch_size']}x{results['patch_size']}, "
      f"batches of {results['batch_size']}; TensorFlow {results['tensorflow']}, keras-cv "
      f"{results['keras_cv']}, {results['cpus']} CPU cores shared with other jobs (uptime "
      f"before each timing below). Median of {results['rounds']} interleaved timings of "
      f"{results['seconds']:g} s each. Exact: share of crops of a coordinate-coded image "
      "that are exactly a window of it (1 = a crop, less = resampled). CPU ms/image: this "
      "process's CPU time (all its threads) per image, which other jobs' load disturbs "
      "less than images/s.",
      "",
      "| pipeline | images/s (median) | vs tf_image | CPU ms/image (median) | exact crops | "
      "rounds (images/s) |",
      "|---|---|---|---|---|---|",
  ]
  for row in results["rows"]:
    rate, exact = row["median_images_per_second"], row["exact_crops"]
    rounds = ", ".join(f"{t['images_per_second']:.0f}" for t in row["rounds"])
    shown_rate = f"{rate:.0f}" if rate else f"failed: {row['error']}"
    ratio = f"{rate / base:.2f}x" if rate and base else "-"
    shown_exact = "n/a (resamples or recolours by design)" if exact is None else f"{exact:.2f}"
    cpu = row["median_cpu_ms_per_image"]
    shown_cpu = "-" if cpu is None else f"{cpu:.2f}"
    lines.append(f"| {row['pipeline']} | {shown_rate} | {ratio} | {shown_cpu} | {shown_exact} "
                 f"| {rounds} |")
  lines += ["", f"`import keras_cv` after TensorFlow: "
            f"{results['keras_cv_import_seconds'] or float('nan'):.1f} s.", "",
            "## Load during the timings", ""]
  for row in results["rows"]:
    for index, timing in enumerate(row["rounds"]):
      lines.append(f"- {row['pipeline']} round {index + 1}: {timing['uptime']}")
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  app.run(main)
