"""Training data: random crops of photos from folders/globs or a local tfds dataset."""

import glob
import os

import tensorflow as tf

from tflic import config as config_lib
from tflic import errors

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
AREA_PER_CROP = 4  # with crops="area": one crop per this many crop areas of an image
PATCH_BUFFER = 256  # with crops="area": crops shuffled across this many


def image_files(sources):
  """Image files of comma-separated folders or glob patterns, sorted per source.

  Raises a one-line error naming the first source that matches no image, so that a
  mistyped second folder does not silently leave a model trained on the first alone.
  """
  files, seen = [], set()
  for source in (s.strip() for s in sources.split(",")):
    pattern = os.path.join(source, "*") if os.path.isdir(source) else source
    found = sorted(f for f in glob.glob(os.path.expanduser(pattern))
                   if f.lower().endswith(IMAGE_EXTENSIONS))
    if not found:
      raise errors.TflicError(f"no images found at {source!r}")
    files += [f for f in found if f not in seen]
    seen.update(found)
  return files


def _decode(path):
  image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
  return tf.ensure_shape(image, [None, None, 3])


def check_tfds(name, data_dir=None):
  """Raises a one-line TflicError, naming the prepare command, unless tfds dataset NAME
  is prepared in data_dir with a train split."""
  from tflic import datasets  # pylint: disable=g-import-not-at-top  (imports tfds)
  datasets.train_builder(name, data_dir)


def _tfds_images(name, data_dir, seed=None):
  from tflic import datasets  # pylint: disable=g-import-not-at-top  (imports tfds)
  return datasets.train_images(name, data_dir, seed=seed)


def train_dataset(source, patch_size, batch_size, seed=None, tfds_data_dir=None,
                  cache=True, crops="image"):
  """An infinite dataset of float32 crops [batch, patch, patch, 3] in [0, 1].

  Args:
    source: folders or globs of images, comma-separated (e.g. two training sets used
      together), or `tfds:NAME` for a tensorflow-datasets dataset already prepared
      on disk, e.g. by `tflic datasets prepare NAME` (nothing is downloaded).
    patch_size: side of the random square crops; smaller images are skipped.
    batch_size: global batch size (a distribution strategy splits it).
    seed: shuffling/cropping seed, for reproducible runs.
    tfds_data_dir: where tfds datasets live (tfds' default if None).
    cache: keep decoded images in memory (400 BSDS photos take ~190 MB).
    crops: "image", one random crop per image per pass, or "area", one per
      `AREA_PER_CROP` crop areas of the image (at least one), so that each photo is seen
      in proportion to its pixels: a 2048x1365 photo gives 10 crops of 256x256 per pass
      where a 512x512 one gives 1. Its crops are spread by a shuffle of `PATCH_BUFFER`.
  """
  if crops not in config_lib.CROPS:
    raise errors.TflicError(f"crops must be {'|'.join(config_lib.CROPS)}, not {crops!r}")
  if source.startswith("tfds:"):
    images = _tfds_images(source[len("tfds:"):], tfds_data_dir, seed=seed)
  else:
    files = image_files(source)
    # Shuffle names, not decoded images, so the first batch needs only a few decodes.
    images = tf.data.Dataset.from_tensor_slices(files).shuffle(
        len(files), seed=seed, reshuffle_each_iteration=False).map(
            _decode, num_parallel_calls=tf.data.AUTOTUNE)
  images = images.filter(lambda image: tf.reduce_all(tf.shape(image)[:2] >= patch_size))
  if cache and not source.startswith("tfds:"):
    images = images.cache()
  images = images.shuffle(64, seed=seed, reshuffle_each_iteration=True).repeat()

  def crop(image):
    patch = tf.image.random_crop(image, [patch_size, patch_size, 3], seed=seed)
    return tf.image.random_flip_left_right(patch, seed=seed)

  if crops == "area":
    def repeat_by_area(image):
      shape = tf.cast(tf.shape(image), tf.int64)
      count = tf.maximum(shape[0] * shape[1] // (AREA_PER_CROP * patch_size**2), 1)
      return tf.data.Dataset.from_tensors(image).repeat(count)
    # The crops of one photo arrive together; the shuffle (50 MB of crops at 256x256)
    # spreads them over batches.
    patches = images.flat_map(repeat_by_area).map(
        crop, num_parallel_calls=tf.data.AUTOTUNE).shuffle(
            PATCH_BUFFER, seed=seed, reshuffle_each_iteration=True)
  else:
    patches = images.map(crop, num_parallel_calls=tf.data.AUTOTUNE)
  # uint8 up to the batch: the shuffle holds a quarter of the bytes, and the conversion is
  # one op per batch.
  return (patches.batch(batch_size, drop_remainder=True)
          .map(lambda batch: tf.cast(batch, tf.float32) / 255.0)
          .prefetch(tf.data.AUTOTUNE))
