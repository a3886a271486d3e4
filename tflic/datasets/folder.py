"""`tflic_folder/NAME`: any folder of images, under a name the user gives.

  tflic datasets prepare my_photos --manual_dir=~/photos
  python -m tflic.train --dataset=tfds:my_photos       # or tfds:tflic_folder/my_photos

Each NAME is a config of the `tflic_folder` builder, made at prepare time (it is not in
the code): its description names the folder it was made from. Once prepared it loads
like any tfds dataset, also without tflic: `tfds.load("tflic_folder/my_photos",
data_dir=...)` reads it from its files. One split, `train`; the images directly in the
folder (not its subfolders).
"""

import os
import re

import tensorflow_datasets as tfds

from tflic.datasets import images
from tflic import errors

BUILDER_NAME = "tflic_folder"
# A tfds config name, and a directory name under data_dir/tflic_folder/.
_VALID_NAME = re.compile(r"[a-z][a-z0-9_]*")


def check_name(name):
  if not _VALID_NAME.fullmatch(name):
    raise errors.TflicError(
        f"dataset name {name!r}: use lowercase letters, digits and underscores, starting "
        "with a letter")


def config(name, folder=None):
  """The BuilderConfig of NAME (the folder is only known, and described, at prepare)."""
  check_name(name)
  description = (f"Images of the folder {os.path.abspath(os.path.expanduser(folder))}"
                 if folder else f"Images of a folder, named {name}")
  return tfds.core.BuilderConfig(name=name, version=TflicFolder.VERSION,
                                 description=description)


class TflicFolder(images.ImageBuilder):
  """Any folder of images (the manual_dir), as a config named by the user."""

  def _info(self):
    return self.dataset_info_from_configs(
        description=(f"{self.builder_config.description}, prepared with `tflic datasets "
                     "prepare`: PNG and JPEG files stored as they are, other images as "
                     "8-bit RGB PNG, with their file names."),
        features=self._features(),
    )

  def image_files(self, manual_dir):
    return images.folder_images(manual_dir, what=self.builder_config.name)
