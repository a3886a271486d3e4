"""Camera photos as people have them: EXIF orientation, ICC profiles (tflic.codec.image_io)."""

import logging
import struct

import numpy as np
import pytest
from PIL import Image
from PIL import ImageCms

from tflic.codec import image_io

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
  with caplog.at_level(logging.WARNING, logger="tflic.codec.image_io"):
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


def _s15(value):
  return struct.pack(">i", round(value * 65536))


def _rgb_profile(description, red, green, blue):
  """A minimal ICC v2 display profile: primaries (D50 XYZ), linear curves, a name."""
  text = description.encode() + b"\0"
  tags = {
      b"desc": b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67),
      b"wtpt": b"XYZ \0\0\0\0" + _s15(0.9642) + _s15(1.0) + _s15(0.8249),
      b"rXYZ": b"XYZ \0\0\0\0" + b"".join(map(_s15, red)),
      b"gXYZ": b"XYZ \0\0\0\0" + b"".join(map(_s15, green)),
      b"bXYZ": b"XYZ \0\0\0\0" + b"".join(map(_s15, blue)),
  }
  linear = b"curv\0\0\0\0" + struct.pack(">IH", 1, 0x100) + b"\0\0"
  for name in (b"rTRC", b"gTRC", b"bTRC"):
    tags[name] = linear
  offset = 128 + 4 + 12 * len(tags)
  table, data = struct.pack(">I", len(tags)), b""
  for name, body in tags.items():
    body += bytes(-len(body) % 4)
    table += name + struct.pack(">II", offset + len(data), len(body))
    data += body
  size = offset + len(data)
  header = (struct.pack(">I", size) + bytes(4) + struct.pack(">I", 0x02100000) + b"mntr" +
            b"RGB XYZ " + bytes(12) + b"acsp" + bytes(24) + struct.pack(">I", 0) +
            _s15(0.9642) + _s15(1.0) + _s15(0.8249) + bytes(48))
  assert len(header) == 128
  return header + table + data


def test_other_rgb_profiles_are_converted_to_srgb_with_one_line(tmp_path, caplog):
  # sRGB's primaries (adapted to D50) with red and green swapped: the file's red is
  # sRGB's green.
  red, green, blue = (0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606,
                                                                          0.7141)
  profile = _rgb_profile("swapped primaries", green, red, blue)
  picture = np.zeros([4, 6, 3], np.uint8)
  picture[..., 0] = 255
  Image.fromarray(picture).save(tmp_path / "swapped.png", icc_profile=profile)
  with caplog.at_level(logging.WARNING, logger="tflic.codec.image_io"):
    image = image_io.read_image(tmp_path / "swapped.png")
  assert np.abs(image.astype(int) - [0, 255, 0]).max() <= 3, image[0, 0]
  [message] = [r.getMessage() for r in caplog.records]
  assert "converted from its ICC profile 'swapped primaries' to sRGB" in message
