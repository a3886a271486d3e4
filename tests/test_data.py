"""Tests of the training data pipeline's sources (tflic.training.data)."""

import numpy as np
from PIL import Image
import pytest

from tflic import errors
from tflic.training import data


def _folder(path, colour, count, size=(40, 32)):
  path.mkdir()
  for i in range(count):
    Image.fromarray(np.full(size[::-1] + (3,), colour, np.uint8)).save(path / f"{i}.png")
  return path


def test_several_sources_are_read_together(tmp_path):
  red = _folder(tmp_path / "red", (255, 0, 0), 3)
  blue = _folder(tmp_path / "blue", (0, 0, 255), 2)
  (blue / "notes.txt").write_text("not an image")
  files = data.image_files(f"{red},{blue}/*.png, {red}/0.png")
  assert files == [str(red / f"{i}.png") for i in range(3)] + [
      f"{blue}/{i}.png" for i in range(2)]  # sorted per source, each file once

  batches = data.train_dataset(f"{red},{blue}", patch_size=16, batch_size=5, seed=3)
  crops = np.concatenate([batch.numpy() for batch in batches.take(4)])
  colours = {tuple(np.round(crop[0, 0]).astype(int)) for crop in crops}
  assert colours == {(1, 0, 0), (0, 0, 1)}


def test_a_source_without_images_is_a_one_line_error(tmp_path):
  red = _folder(tmp_path / "red", (255, 0, 0), 1)
  (tmp_path / "empty").mkdir()
  with pytest.raises(errors.TflicError, match=r"^no images found at '.*empty'$"):
    data.image_files(f"{red},{tmp_path / 'empty'}")
  with pytest.raises(errors.TflicError, match="no images found at '.*missing"):
    data.train_dataset(f"{tmp_path / 'missing'}/*.jpg,{red}", 16, 1)


def test_area_crops_see_each_image_in_proportion_to_its_pixels(tmp_path):
  # 16x16 crops: a 64x64 image holds 16 crop areas (4 crops by area), a 32x32 one 4 (1).
  large = _folder(tmp_path / "large", (255, 0, 0), 1, size=(64, 64))
  small = _folder(tmp_path / "small", (0, 0, 255), 2, size=(32, 32))
  sources = f"{large},{small}"
  counts = {}
  for crops in ("image", "area"):
    batches = data.train_dataset(sources, patch_size=16, batch_size=6, seed=0, crops=crops)
    patches = np.concatenate([batch.numpy() for batch in batches.take(60)])
    red = np.mean(np.round(patches[:, 0, 0, 0]) == 1)
    counts[crops] = red
  assert counts["image"] == pytest.approx(1 / 3, abs=0.02)  # one crop per image
  assert counts["area"] == pytest.approx(4 / 6, abs=0.02)   # 4 of the 6 crops of a pass
  with pytest.raises(errors.TflicError, match="crops must be image|area"):
    data.train_dataset(sources, 16, 1, crops="pixels")
