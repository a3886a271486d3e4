r"""`tflic datasets`: local tensorflow-datasets datasets of images (nothing is downloaded).

  tflic datasets prepare NAME [--manual_dir=DIR] [--tfds_data_dir=DIR] [--overwrite]
  tflic datasets list [--tfds_data_dir=DIR]

NAME: `train_photos` (BSDS500 + CID22-512; --manual_dir defaults to ../shared/data;
configs train_photos/bsds500 and train_photos/cid22), `kodak` (evaluation; defaults to
../shared/data/kodak), or any other name for the folder of images given as --manual_dir.
Then: `python -m tflic.train --dataset=tfds:NAME`, `tflic eval --dataset=tfds:NAME`.
"""

import contextlib
import io

from absl import flags

from tflic import common_flags
from tflic import errors

_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None, "Folder of the images to prepare (train_photos: the folder holding "
    "train/ and cid22/, default ../shared/data; kodak: default ../shared/data/kodak).")
_TFDS_DATA_DIR = common_flags.TFDS_DATA_DIR
_OVERWRITE = common_flags.OVERWRITE
_PROGRESS = common_flags.PROGRESS
common_flags.declare_key_flags(__name__, "tfds_data_dir", "overwrite", "progress")

USAGE = ("usage: tflic datasets prepare NAME [--manual_dir=DIR] [--tfds_data_dir=DIR] "
         "[--overwrite] | tflic datasets list [--tfds_data_dir=DIR]")


@contextlib.contextmanager
def _quiet_tfds():
  """Hides tfds' own chatter: its logs (datasets.quiet_tfds) and the lines it prints."""
  from tflic import datasets  # pylint: disable=g-import-not-at-top  (imports tfds)
  with datasets.quiet_tfds(), contextlib.redirect_stdout(io.StringIO()):
    yield


def _prepare(names):
  from tflic import datasets  # pylint: disable=g-import-not-at-top  (imports tfds)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if not _PROGRESS.value:
    tfds.disable_progress_bar()
  for name in names:
    with _quiet_tfds():
      done = datasets.prepare(name, manual_dir=_MANUAL_DIR.value,
                              data_dir=_TFDS_DATA_DIR.value, overwrite=_OVERWRITE.value)
    state = ("already prepared (--overwrite rebuilds it)" if done["reused"] else
             f"prepared in {done['seconds']:.1f} s")
    skipped = 0 if done["reused"] else done["files"] - done["images"]
    print(f"{done['name']}: {done['images']} images, {done['bytes'] / 1e6:.1f} MB, "
          f"{state}{f', {skipped} unreadable files skipped' if skipped else ''}: "
          f"{done['path']} (tfds name {done['tfds_name']}); use --dataset=tfds:{done['name']}")


def _list():
  from tflic import datasets  # pylint: disable=g-import-not-at-top  (imports tfds)
  data_dir = datasets.data_dir_or_default(_TFDS_DATA_DIR.value)
  found = datasets.prepared(data_dir)
  if not found:
    print(f"no datasets prepared in {data_dir}")
  for name, splits in found:
    print(f"tfds:{name}  " + ", ".join(f"{split}: {n} images" for split, n in splits.items()))


def main(argv):
  """Runs `tflic datasets COMMAND`; argv is absl's (program name first)."""
  command, names = (argv[1], argv[2:]) if len(argv) > 1 else (None, [])
  if command == "prepare":
    if not names:
      raise errors.TflicError(f"prepare needs a dataset NAME; {USAGE}")
    if len(names) > 1 and _MANUAL_DIR.value:
      raise errors.TflicError("--manual_dir is one folder: prepare one NAME at a time")
    _prepare(names)
  elif command == "list":
    if names:
      raise errors.TflicError(f"unexpected arguments: {' '.join(names)}")
    _list()
  else:
    what = f"unknown command {command!r}" if command else "no command"
    raise errors.TflicError(f"{what}; {USAGE}")
  return 0
