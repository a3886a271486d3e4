"""What the tflic builders share: listing a folder's images and storing them losslessly.

Every tflic dataset has two features: `image` (uint8 [H, W, 3]) and `file_name` (the
image's file name, which `tflic eval` names its results by). 8-bit RGB PNG and JPEG
files are stored as they are, byte for byte, so that a dataset holds exactly the pixels
of its folder (and JPEG photos are not inflated into PNGs); any other image (grayscale,
palette, alpha, 16-bit, CMYK, WebP, BMP, TIFF) is converted to 8-bit RGB as `tflic
compress` reads it (tflic.codec.image_io) and stored as PNG. Both are lossless from what
`tflic eval --dataset=FOLDER` would read.
"""

import inspect
import io
import logging
import os

from etils import epath
from PIL import Image
import tensorflow_datasets as tfds

from tflic.codec import image_io
from tflic import errors

# Suffixes of the formats tflic.codec.image_io reads (its FORMATS); other files are ignored.
SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
_STORED_AS_IS = ("PNG", "JPEG")
_LOG = logging.getLogger(__name__)


def folder_images(folder, what="images"):
  """The image files directly in `folder` (by suffix), sorted; one-line errors if the
  folder is missing or holds none."""
  folder = os.path.expanduser(os.fspath(folder))
  if not os.path.isdir(folder):
    raise errors.TflicError(f"{what}: folder {folder} does not exist")
  files = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                 if f.lower().endswith(SUFFIXES) and os.path.isfile(os.path.join(folder, f)))
  if not files:
    raise errors.TflicError(f"{what}: no images ({', '.join(SUFFIXES)}) in {folder}")
  return files


def encoded(path):
  """The bytes to store for an image file: the file itself if it is 8-bit RGB PNG or
  JPEG, else a PNG of its 8-bit RGB pixels. Raises TflicError for an unreadable file."""
  with open(path, "rb") as f:
    data = f.read()
  try:
    with Image.open(io.BytesIO(data)) as image:
      width, height = image.size
      as_is = (image.format in _STORED_AS_IS and image.mode == "RGB" and
               not any(";16" in str(tile.args) for tile in image.tile) and
               0 < width * height <= image_io.DEFAULT_MAX_PIXELS)
  except Exception:  # pylint: disable=broad-except
    as_is = False  # read_image below gives the one-line reason
  if as_is:
    return data
  pixels = image_io.read_image(path)  # converts with a warning, or raises TflicError
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="PNG")
  return buffer.getvalue()


def examples(files, key=os.path.basename):
  """(key, example) of each readable file; unreadable ones are skipped with a warning."""
  for path in files:
    try:
      data = encoded(path)
    except errors.TflicError as e:
      _LOG.warning("skipping %s", e)
      continue
    yield key(path), {"image": data, "file_name": os.path.basename(path)}


class ImageBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the tflic builders: images from a manual_dir, with their file names."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version: images stored as-is (8-bit RGB PNG/JPEG) or "
                            "as PNG, with their file names."}
  # Shown by tfds when the manual_dir is missing; `tflic datasets prepare` checks first.
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Run `tflic datasets prepare NAME --manual_dir=DIR`."

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    # tfds 4.9.10's own code_path imports importlib_resources (not installed with it) for
    # any builder in a package; the path of the builder's module is what it would return.
    return epath.Path(inspect.getfile(cls))

  def _features(self):
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3)),
        "file_name": tfds.features.Text(),
    })

  def image_files(self, manual_dir):
    """The files to store, from the prepare command's manual_dir (TflicError if none)."""
    raise NotImplementedError

  def split_name(self):
    return "train"

  def _split_generators(self, dl_manager):
    files = self.image_files(dl_manager.manual_dir)
    return {self.split_name(): self._generate_examples(files)}

  def _generate_examples(self, files):
    return examples(files)
