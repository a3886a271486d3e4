"""tensorflow-datasets datasets: `tflic datasets prepare`, then tfds:NAME in training and eval.

A tiny folder (an RGB PNG, a grayscale PNG, a file that is no image) is prepared once into
a temporary data_dir; commands run in this process (`run_main`) except the check that the
dataset loads in a fresh process with tfds alone.
"""

import io
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

# Define the flags of the commands run_main runs (they must exist before its flagsaver).
from tflic.datasets import main as datasets_main  # pylint: disable=unused-import
from tflic.evaluation import main as eval_main  # pylint: disable=unused-import
from tflic import train  # pylint: disable=unused-import

NAME = "tiny_photos"


def _smooth(height, width, seed):
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[:height, :width]
  pixels = np.stack([x * 2, y * 3, (x + y) * 1.5], -1) + rng.normal(0, 8, (height, width, 3))
  return np.clip(pixels, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  """(folder, data_dir, prepare's output line) of NAME prepared from a tiny folder."""
  from tflic import datasets  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("tfds")
  folder = root / "photos"
  folder.mkdir()
  Image.fromarray(_smooth(72, 80, 0)).save(folder / "rgb.png")
  Image.fromarray(_smooth(64, 96, 1)[:, :, 0]).save(folder / "gray.png")
  (folder / "broken.png").write_bytes(b"not a png")
  (folder / "notes.txt").write_text("not an image")
  done = datasets.prepare(NAME, manual_dir=str(folder), data_dir=str(root / "data"))
  return folder, root / "data", done


def test_prepare_stores_images_losslessly_with_their_file_names(prepared):
  from tflic import datasets  # pylint: disable=g-import-not-at-top
  folder, data_dir, done = prepared
  assert done["images"] == 2 and done["files"] == 3 and not done["reused"]
  assert done["tfds_name"] == f"tflic_folder/{NAME}"
  stored = dict(datasets.encoded_images(NAME, str(data_dir)))
  assert sorted(stored) == ["gray.png", "rgb.png"]
  assert stored["rgb.png"] == (folder / "rgb.png").read_bytes()  # 8-bit RGB PNG: as is
  with Image.open(folder / "gray.png") as gray:
    expected = np.repeat(np.asarray(gray)[:, :, None], 3, axis=2)
  with Image.open(io.BytesIO(stored["gray.png"])) as image:  # converted: RGB PNG
    assert (image.format, image.mode) == ("PNG", "RGB")
    np.testing.assert_array_equal(np.asarray(image), expected)


def test_a_fresh_process_loads_it_with_tfds_alone(prepared):
  """No tflic import, no network: tfds reads the prepared files (download=False)."""
  _, data_dir, _ = prepared
  script = (
      "import tensorflow_datasets as tfds, sys\n"
      f"ds = tfds.load('tflic_folder/{NAME}', split='train', data_dir={str(data_dir)!r}, "
      "download=False)\n"
      "rows = sorted((e['file_name'].numpy().decode(), tuple(e['image'].shape)) for e in ds)\n"
      "print(rows)\n"
      "assert 'tflic' not in sys.modules\n")
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd="/", env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 0, result.stderr[-2000:]
  assert "[('gray.png', (64, 96, 3)), ('rgb.png', (72, 80, 3))]" in result.stdout


def test_train_two_steps_from_tfds(prepared, tmp_path, run_main):
  _, data_dir, _ = prepared
  workdir = tmp_path / "work"
  # Tracing the first step is most of the cost; training only the hyperprior (the
  # smallest backward graph) takes a third off it, and the data path is the same.
  status, stdout, stderr = run_main(
      "train", "--progress=false", "--config=tiny", f"--workdir={workdir}", "--steps=2",
      "--batch_size=2", "--patch_size=64", "--train_only=hyperprior",
      f"--dataset=tfds:{NAME}", f"--tfds_data_dir={data_dir}")
  assert status in (0, None), stderr[-2000:]
  assert "checkpoint at step 2" in stdout, stdout
  assert list((workdir / "checkpoints").glob("ckpt-2.index"))


def test_eval_from_tfds_names_results_by_file_name(prepared, tmp_path, run_main):
  _, data_dir, _ = prepared
  out = tmp_path / "eval"
  status, stdout, stderr = run_main(
      "eval", f"--dataset=tfds:{NAME}", f"--tfds_data_dir={data_dir}", f"--out={out}",
      "--codecs=jpeg", "--qualities=jpeg:50", "--noprogress")
  assert status in (0, None), stderr[-2000:]
  assert "2 measured, 0 resumed" in stdout, stdout
  results = json.loads((out / "results.json").read_text())
  assert results["dataset"] == f"tfds:{NAME}"
  assert sorted(results["codecs"]["jpeg"]["results"]["50"]) == ["gray.png", "rgb.png"]


def test_missing_datasets_and_folders_are_one_line_errors(prepared, tmp_path, run_main):
  _, data_dir, _ = prepared
  kodak = tmp_path / "kodak"  # an evaluation set: no train split
  kodak.mkdir()
  Image.fromarray(_smooth(64, 64, 2)).save(kodak / "kodim01.png")
  empty = tmp_path / "empty"
  empty.mkdir()
  status, stdout, _ = run_main("datasets", "prepare", "kodak", f"--manual_dir={kodak}",
                               f"--tfds_data_dir={data_dir}", "--noprogress")
  assert status in (0, None) and "kodak: 1 images" in stdout, stdout
  workdir = tmp_path / "work"
  for args, message in (
      (("train", "--config=tiny", f"--workdir={workdir}", "--dataset=tfds:nothing_here"),
       "tfds dataset 'nothing_here' is not prepared in "
       f"{data_dir}; prepare it with `tflic datasets prepare nothing_here --manual_dir=DIR"),
      (("eval", "--dataset=tfds:nothing_here", f"--out={tmp_path / 'out'}", "--codecs=jpeg"),
       "prepare it with `tflic datasets prepare nothing_here --manual_dir=DIR"),
      (("train", "--config=tiny", f"--workdir={workdir}", "--dataset=tfds:kodak"),
       "tfds dataset 'kodak' has no train split"),
      (("datasets", "prepare", "more", f"--manual_dir={empty}"), "no images"),
      (("datasets", "prepare", "more", f"--manual_dir={tmp_path / 'missing'}"),
       "does not exist"),
      (("datasets", "prepare", "more"), "--manual_dir=DIR is required")):
    status, _, stderr = run_main(*args, f"--tfds_data_dir={data_dir}")
    assert status == 2, stderr
    [line] = stderr.strip().splitlines()
    assert line.startswith(f"tflic {args[0]}: error: ") and message in line, stderr
  assert not workdir.exists() and not (tmp_path / "out").exists()
