"""Training data: random crops of photos from a folder/glob or a local tfds dataset."""

import glob
import os

import tensorflow as tf

from tflic import errors

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def image_files(pattern):
  """Image files matched by a directory or glob pattern, sorted; raises if there are none."""
  if os.path.isdir(pattern):
    pattern = os.path.join(pattern, "*")
  files = sorted(f for f in glob.glob(os.path.expanduser(pattern))
                 if f.lower().endswith(IMAGE_EXTENSIONS))
  if not files:
    raise errors.TflicError(f"no images found at {pattern!r}")
  return files


def _decode(path):
  image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
  return tf.ensure_shape(image, [None, None, 3])


def _tfds_images(name, data_dir):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    dataset = tfds.load(name, split="train", data_dir=data_dir, download=False,
                        shuffle_files=True)
  except Exception as e:  # tfds raises many types for a dataset that is not there
    raise errors.TflicError(
        f"tfds dataset {name!r} is not available locally ({type(e).__name__}); "
        "prepare it with tfds first or pass a folder of images") from None
  return dataset.map(lambda example: example["image"])


def train_dataset(source, patch_size, batch_size, seed=None, tfds_data_dir=None,
                  cache=True):
  """An infinite dataset of float32 crops [batch, patch, patch, 3] in [0, 1].

  Args:
    source: a folder or glob of images, or `tfds:NAME` for a tensorflow-datasets
      dataset already prepared on disk (nothing is downloaded).
    patch_size: side of the random square crops; smaller images are skipped.
    batch_size: global batch size (a distribution strategy splits it).
    seed: shuffling/cropping seed, for reproducible runs.
    tfds_data_dir: where tfds datasets live (tfds' default if None).
    cache: keep decoded images in memory (400 BSDS photos take ~190 MB).
  """
  if source.startswith("tfds:"):
    images = _tfds_images(source[len("tfds:"):], tfds_data_dir)
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
    patch = tf.image.random_flip_left_right(patch, seed=seed)
    return tf.cast(patch, tf.float32) / 255.0

  return (images.map(crop, num_parallel_calls=tf.data.AUTOTUNE)
          .batch(batch_size, drop_remainder=True)
          .prefetch(tf.data.AUTOTUNE))
