"""Camera photos as people have them: EXIF orientation, ICC profiles (tflic.image_io)."""

import logging

import numpy as np
import pytest
from PIL import Image
from PIL import ImageCms

from tflic import image_io

# What each EXIF orientation (2..8) does to the upright picture, as stored.
_STORED = {1: lambda a: a, 2: np.fliplr, 3: lambda a: np.rot90(a, 2), 4: np.flipud,
           5: lambda a: np.rot90(np.fliplr(a), 1), 6: lambda a: np.rot90(a, 1),
           7: lambda a: np.rot90(np.fliplr(a), -1), 8: lambda a: np.rot90(a, -1)}


def _upright_picture():
  rng = np.random.default_rng(0)
  return rng.integers(0, 256, [5, 9, 3], dtype=np.uint8)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, orientation):
  upright = _upright_picture()
  stored = np.ascontiguousarray(_STORED[orientation](upright))
  exif = Image.Exif()
  exif[0x0112] = orientation
  path = tmp_path / "photo.png"
  Image.fromarray(stored).save(path, exif=exif)
  np.testing.assert_array_equal(image_io.read_image(path), upright)


def test_exif_orientation_of_a_jpeg(tmp_path):
  upright = np.zeros([32, 64, 3], np.uint8)
  upright[:, :16] = 255  # a white band on the left of the upright picture
  exif = Image.Exif()
  exif[0x0112] = 6  # stored turned a quarter; viewers turn it back
  path = tmp_path / "photo.jpg"
  Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1))).save(path, exif=exif,
                                                                   quality=95)
  image = image_io.read_image(path)
  assert image.shape == upright.shape
  assert np.abs(image.astype(int) - upright).mean() < 3


def test_srgb_profiles_are_silent_and_other_profiles_are_one_line(tmp_path, caplog):
  picture = _upright_picture()
  srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
  lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
  with caplog.at_level(logging.WARNING, logger="tflic.image_io"):
    Image.fromarray(picture).save(tmp_path / "srgb.png", icc_profile=srgb)
    np.testing.assert_array_equal(image_io.read_image(tmp_path / "srgb.png"), picture)
    assert not caplog.records
    # A profile that cannot describe RGB pixels: kept as they are, said in one line.
    Image.fromarray(picture).save(tmp_path / "lab.png", icc_profile=lab)
    np.testing.assert_array_equal(image_io.read_image(tmp_path / "lab.png"), picture)
    Image.fromarray(picture).save(tmp_path / "junk.png", icc_profile=b"not a profile")
    np.testing.assert_array_equal(image_io.read_image(tmp_path / "junk.png"), picture)
  messages = [r.getMessage() for r in caplog.records]
  assert len(messages) == 2 and all("\n" not in m for m in messages)
  assert "lab.png: ICC profile" in messages[0] and "taken as sRGB" in messages[0]
  assert "junk.png: unreadable ICC profile ignored" in messages[1]
