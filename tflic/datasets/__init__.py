"""Local tensorflow-datasets (tfds) datasets of images: tflic's builders, prepare, load.

Builders (one module each):
  train_photos           BSDS500 train/ + CID22-512 cid22/ of ../shared/data (configs all,
                         bsds500, cid22), for training; split `train`.
  kodak                  the 24 Kodak images, for evaluation; split `test`.
  tflic_folder/NAME      any folder of images, under a name the user gives; split `train`.

`tflic datasets prepare NAME --manual_dir=DIR` writes one (nothing is downloaded: the
images come from DIR); then `--dataset=tfds:NAME` reads it in training and `tflic eval`.
NAME is `train_photos[/CONFIG]`, `kodak`, or any other name for a folder (`tfds:NAME` is
short for `tfds:tflic_folder/NAME`). Other tfds datasets already prepared in the data_dir
load too. Every failure is a one-line `TflicError`.
"""

import contextlib
import json
import logging
import os
import pathlib
import time

from etils import epath
import tensorflow_datasets as tfds
from tensorflow_datasets.core import constants

from tflic.datasets import folder
from tflic.datasets import kodak
from tflic.datasets import train_photos
from tflic import errors

# Builders by name, with the folder `prepare` reads when --manual_dir is not given
# (relative to the working directory, as training's default dataset is).
KNOWN = {
    "train_photos": (train_photos.TrainPhotos, train_photos.DEFAULT_MANUAL_DIR),
    "kodak": (kodak.Kodak, kodak.DEFAULT_MANUAL_DIR),
}


class _BelowError(logging.Filter):

  def filter(self, record):
    return record.levelno >= logging.ERROR


@contextlib.contextmanager
def quiet_tfds():
  """Hides tfds' info and warning logs (which go through absl's logger), e.g. the
  lookups that fail before a one-line error; tflic's own warnings still show."""
  absl_logger = logging.getLogger("absl")
  quiet = _BelowError()
  absl_logger.addFilter(quiet)
  try:
    yield
  finally:
    absl_logger.removeFilter(quiet)


def data_dir_or_default(data_dir=None):
  """The tfds data_dir: the given one, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  if data_dir and "://" not in data_dir:  # gs:// and other remote data_dirs as they are
    return os.path.abspath(os.path.expanduser(data_dir))
  return data_dir or constants.get_default_data_dir()


def _in_catalogue(name):
  return name in tfds.list_builders(with_community_datasets=False)  # no network


def prepare_command(name, data_dir=None):
  """The command that prepares NAME, for error messages."""
  base = name.partition("/")[0]
  if base not in KNOWN and base != folder.BUILDER_NAME and _in_catalogue(base):
    return f"tfds build {name}" + (f" --data_dir={data_dir}" if data_dir else "")
  manual_dir = KNOWN[base][1] if base in KNOWN else "DIR"
  command = f"tflic datasets prepare {name} --manual_dir={manual_dir}"
  return command + (f" --tfds_data_dir={data_dir}" if data_dir else "")


def _known_builder(name, data_dir):
  base, _, config_name = name.partition("/")
  cls = KNOWN[base][0]
  if config_name and config_name not in cls.builder_configs:
    raise errors.TflicError(f"{base} has no config {config_name!r}; its configs: "
                            f"{', '.join(cls.builder_configs) or 'none'}")
  return cls(config=config_name or None, data_dir=data_dir)


def _folder_name(name):
  """NAME of a `tflic_folder` dataset named `name`, or None if it names another."""
  base, slash, config_name = name.partition("/")
  if base == folder.BUILDER_NAME:
    if not config_name:
      raise errors.TflicError(f"{folder.BUILDER_NAME} needs a name: "
                              f"{folder.BUILDER_NAME}/NAME or just NAME")
    return config_name
  return None if slash or base in KNOWN else name


def builder(name, data_dir=None):
  """The prepared tfds builder of NAME; TflicError naming the prepare command if it is
  not prepared in data_dir (nothing is ever downloaded)."""
  with quiet_tfds():
    return _builder(name, data_dir)


def _builder(name, data_dir):
  data_dir = data_dir_or_default(data_dir)
  missing = errors.TflicError(
      f"tfds dataset {name!r} is not prepared in {data_dir}; prepare it with "
      f"`{prepare_command(name, data_dir if data_dir != data_dir_or_default() else None)}`")
  if name.partition("/")[0] in KNOWN:
    result = _known_builder(name, data_dir)
    if not result.is_prepared():
      raise missing
    return result
  folder_name = _folder_name(name)
  if name.startswith(f"{folder.BUILDER_NAME}/"):
    folder.check_name(folder_name)
  if folder_name is not None and (
      epath.Path(data_dir) / folder.BUILDER_NAME / folder_name).is_dir():
    try:  # from its files (its config is not in the code)
      result = tfds.builder(f"{folder.BUILDER_NAME}/{folder_name}", data_dir=data_dir)
    except Exception:  # pylint: disable=broad-except  (e.g. an incomplete preparation)
      raise missing from None
  elif folder_name is not None and name.startswith(f"{folder.BUILDER_NAME}/"):
    raise missing
  else:  # another tfds dataset prepared in data_dir (e.g. one of tfds' catalogue)
    try:
      result = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
      raise missing from None
    except Exception as e:  # pylint: disable=broad-except
      raise errors.TflicError(f"tfds dataset {name!r} in {data_dir}: "
                              f"{type(e).__name__}: {str(e).splitlines()[0]}") from None
  if not result.is_prepared():
    raise missing
  return result


def _image_feature(result, name):
  if "image" not in result.info.features:
    raise errors.TflicError(f"tfds dataset {name!r} has no 'image' feature")


def train_builder(name, data_dir=None):
  """builder(), checked for a train split of images (one-line TflicError if not)."""
  result = builder(name, data_dir)
  splits = list(result.info.splits)
  if "train" not in splits:
    raise errors.TflicError(f"tfds dataset {name!r} has no train split (it has "
                            f"{', '.join(splits)}: an evaluation set?)")
  _image_feature(result, name)
  return result


def train_images(name, data_dir=None, seed=None):
  """A tf.data.Dataset of uint8 [H, W, 3] images of NAME's train split."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  result = train_builder(name, data_dir)
  with quiet_tfds():
    dataset = result.as_dataset(split="train", shuffle_files=True,
                                read_config=tfds.ReadConfig(shuffle_seed=seed))

  def image(example):
    pixels = example["image"]
    if pixels.shape[-1] == 1:  # a grayscale dataset of the tfds catalogue
      pixels = tf.image.grayscale_to_rgb(pixels)
    return pixels

  return dataset.map(image, num_parallel_calls=tf.data.AUTOTUNE)


def eval_split(result):
  """The split `tflic eval` reads: `test` if there is one, else all of them."""
  splits = sorted(result.info.splits)
  return "test" if "test" in splits else "+".join(splits)


def encoded_images(name, data_dir=None):
  """[(file name, encoded bytes)] of NAME's evaluation split, sorted by name.

  The bytes are the stored file (not decoded by TensorFlow), so `tflic eval` decodes
  them as it decodes the same file in a folder. Datasets without a file_name feature
  name their images by position (000000.png, ...).
  """
  result = builder(name, data_dir)
  _image_feature(result, name)
  with quiet_tfds():
    dataset = result.as_dataset(split=eval_split(result), shuffle_files=False,
                                decoders={"image": tfds.decode.SkipDecoding()})
  items = {}
  for index, example in enumerate(tfds.as_numpy(dataset)):
    file_name = example.get("file_name")
    file_name = file_name.decode("utf-8") if file_name is not None else f"{index:06d}.png"
    if file_name in items:
      raise errors.TflicError(f"tfds dataset {name!r} holds two images named {file_name}")
    items[file_name] = example["image"]
  if not items:
    raise errors.TflicError(f"tfds dataset {name!r} holds no images")
  return sorted(items.items())


def prepare(name, manual_dir=None, data_dir=None, overwrite=False):
  """Writes dataset NAME from the images of manual_dir into data_dir.

  Returns a dict: name (as for tfds:NAME), tfds_name, path, images, bytes, seconds,
  reused (True if it was already prepared and not overwritten).
  """
  start = time.perf_counter()
  data_dir = data_dir_or_default(data_dir)
  base = name.partition("/")[0]
  if base in KNOWN:
    result = _known_builder(name, data_dir)
    manual_dir = manual_dir or KNOWN[base][1]
    tfds_name = result.info.full_name.rsplit("/", 1)[0]
  else:
    folder_name = _folder_name(name)
    if folder_name is None:
      raise errors.TflicError(
          f"cannot prepare {name!r}: tflic prepares {', '.join(KNOWN)} and folders "
          "(any other NAME); prepare tfds catalogue datasets with tfds")
    folder.check_name(folder_name)
    if _in_catalogue(folder_name):
      raise errors.TflicError(f"{folder_name!r} is a tfds catalogue dataset: name the "
                              "folder otherwise")
    if not manual_dir:
      raise errors.TflicError(f"--manual_dir=DIR is required: the folder of images to "
                              f"prepare as {folder_name}")
    name = folder_name
    result = folder.TflicFolder(config=folder.config(folder_name, manual_dir),
                                data_dir=data_dir)
    tfds_name = f"{folder.BUILDER_NAME}/{folder_name}"
  manual_dir = os.path.abspath(os.path.expanduser(manual_dir))
  files = result.image_files(manual_dir)  # one-line errors for a missing or empty folder
  reused = result.is_prepared() and not overwrite
  if not reused:
    mode = (tfds.download.GenerateMode.FORCE_REDOWNLOAD if overwrite else
            tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    result.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir, try_download_gcs=False, download_mode=mode))
  split = result.info.splits[result.split_name()]
  if not split.num_examples:
    raise errors.TflicError(f"none of the {len(files)} files in {manual_dir} could be read")
  return dict(name=name, tfds_name=tfds_name, path=str(result.data_dir),
              images=split.num_examples, files=len(files), bytes=int(split.num_bytes),
              seconds=time.perf_counter() - start, reused=reused)


def prepared(data_dir=None):
  """[(name for tfds:NAME, images per split)] of the datasets prepared in data_dir."""
  data_dir = data_dir_or_default(data_dir)
  found = []
  for info in sorted(pathlib.Path(data_dir).glob("**/dataset_info.json")):
    if any(part.startswith(constants.INCOMPLETE_PREFIX) for part in info.parts):
      continue
    parts = info.relative_to(data_dir).parts[:-2]  # NAME[/CONFIG]/VERSION/dataset_info
    if parts and parts[0] == folder.BUILDER_NAME and len(parts) == 2:
      parts = parts[1:]
    try:
      splits = {s["name"]: sum(int(n) for n in s.get("shardLengths", []))
                for s in json.loads(info.read_text()).get("splits", [])}
    except (OSError, ValueError, KeyError, TypeError):
      continue
    found.append(("/".join(parts), splits))
  return found
