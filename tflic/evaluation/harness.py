"""Runs codecs x settings x images and keeps every measurement in results.json.

results.json is rewritten atomically after every measurement, so an interrupted run loses at
most the one in progress, and a new run skips what is already there. Its layout:

  {"format": "tflic-eval-results/1", "dataset": DIR (or tfds:NAME),
   "codecs": {CODEC: {"config": {...}, "setting_label": "quality",
                      "results": {SETTING: {IMAGE: {"bytes", "bpp", "psnr", "msssim",
                                                    "msssim_db", "msssim_scales", "height",
                                                    "width", "encode_seconds",
                                                    "decode_seconds"}}}}},
   "skipped_images": {IMAGE: REASON}, "failures": {"CODEC/SETTING/IMAGE": REASON}}

Non-finite numbers (PSNR of a lossless decode, MS-SSIM of a tiny image) are stored as null.
"""

import io
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Sequence

import numpy as np
from PIL import Image

from tflic import errors
from tflic.evaluation import codecs as codecs_lib
from tflic.evaluation import metrics

RESULTS_NAME = "results.json"
FORMAT = "tflic-eval-results/1"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".pnm", ".bmp", ".tif", ".tiff", ".webp")


def list_images(dataset_dir) -> List[Path]:
  """The image files directly in dataset_dir (by suffix), sorted by name."""
  dataset_dir = Path(dataset_dir)
  if not dataset_dir.is_dir():
    raise errors.TflicError(f"dataset directory {dataset_dir} does not exist")
  images = sorted(p for p in dataset_dir.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
  if not images:
    raise errors.TflicError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {dataset_dir}")
  return images


class EncodedImage(NamedTuple):
  """An image of a tfds dataset (`tflic eval --dataset=tfds:NAME`): its file name and
  stored bytes, decoded by load_image as the same file in a folder would be."""
  name: str
  data: bytes
  dataset: str = ""

  def __str__(self):
    return f"{self.dataset}/{self.name}" if self.dataset else self.name


def tfds_images(dataset, data_dir=None) -> List[EncodedImage]:
  """The images of `tfds:NAME` (prepared on disk), sorted by file name."""
  from tflic import datasets  # pylint: disable=g-import-not-at-top  (imports tfds)
  return [EncodedImage(name, data, dataset)
          for name, data in datasets.encoded_images(dataset[len("tfds:"):], data_dir)]


def load_image(path) -> np.ndarray:
  """An image file (or EncodedImage) as H x W x 3 uint8 RGB (alpha dropped, grey
  replicated)."""
  source = io.BytesIO(path.data) if isinstance(path, EncodedImage) else path
  with Image.open(source) as image:
    return np.asarray(image.convert("RGB"))


def _json_number(value):
  return value if math.isfinite(value) else None


class Results:
  """The contents of results.json, saved atomically after every change."""

  def __init__(self, path, data: Dict[str, Any]):
    self.path = Path(path)
    self.data = data

  @classmethod
  def open(cls, out_dir, dataset_dir, resume: bool = True) -> "Results":
    """Loads OUT/results.json if resuming and it exists, else starts empty."""
    path = Path(out_dir) / RESULTS_NAME
    dataset = (str(dataset_dir) if str(dataset_dir).startswith("tfds:") else
               str(Path(dataset_dir).resolve()))  # tfds:NAME, or the folder
    data = {"format": FORMAT, "dataset": dataset, "codecs": {}, "skipped_images": {},
            "failures": {}}
    if resume and path.exists():
      try:
        with open(path, encoding="utf-8") as f:
          data = json.load(f)
      except (OSError, ValueError) as e:
        raise errors.TflicError(f"cannot read {path} to resume ({e}); use --noresume") from e
      if data.get("format") != FORMAT:
        raise errors.TflicError(f"{path} is not a {FORMAT} file; use --noresume or another --out")
      if data.get("dataset") != dataset:
        print(f"tflic eval: {path} was measured on {data.get('dataset')}, now on {dataset}; "
              "images are matched by file name", file=sys.stderr)
    return cls(path, data)

  def codec_results(self, codec: codecs_lib.Codec) -> Dict[str, Dict[str, Any]]:
    """The {setting: {image: entry}} of a codec; refuses a codec configured differently."""
    config = json.loads(json.dumps(codec.config()))  # As it reads back from the file.
    stored = self.data["codecs"].setdefault(
        codec.name, {"config": config, "setting_label": codec.setting_label, "results": {}})
    if stored["config"] != config:
      raise errors.TflicError(
          f"{self.path} has {codec.name} results made with other options ({stored['config']} "
          f"!= {config}); use --noresume or another --out")
    return stored["results"]

  def save(self):
    """Writes results.json through a temporary file and a rename, so it is never half-written."""
    self.path.parent.mkdir(parents=True, exist_ok=True)
    temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
    try:
      with open(temporary, "w", encoding="utf-8") as f:
        json.dump(self.data, f, indent=1, allow_nan=False)
      os.replace(temporary, self.path)
    finally:
      temporary.unlink(missing_ok=True)


class Summary(NamedTuple):
  """What one run did: measurements made, kept from before, failed; images skipped."""
  measured: int
  reused: int
  failed: int
  skipped_images: Dict[str, str]


def measure(codec: codecs_lib.Codec, image: np.ndarray, setting) -> Dict[str, Any]:
  """Encodes and decodes one image at one setting; returns its results.json entry."""
  start = time.perf_counter()
  data = codec.encode(image, setting)
  encode_seconds = time.perf_counter() - start
  start = time.perf_counter()
  decoded = np.asarray(codec.decode(data))
  decode_seconds = time.perf_counter() - start
  if decoded.dtype != np.uint8 or decoded.shape != image.shape:
    raise ValueError(f"decoder returned {decoded.dtype} {decoded.shape}, "
                     f"expected uint8 {image.shape}")
  height, width = image.shape[:2]
  quality = metrics.compute(image, decoded)
  return {
      "bytes": len(data),
      "bpp": len(data) * 8 / (height * width),
      "psnr": _json_number(quality["psnr"]),
      "msssim": _json_number(quality["msssim"]),
      "msssim_db": _json_number(quality["msssim_db"]),
      "msssim_scales": quality["msssim_scales"],
      "height": height,
      "width": width,
      "encode_seconds": encode_seconds,
      "decode_seconds": decode_seconds,
  }


def evaluate(images: Sequence[Path], codecs: Sequence[codecs_lib.Codec], results: Results,
             progress: bool = True) -> Summary:
  """Measures every codec at every setting on every image not yet in `results`."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  tables = {codec.name: results.codec_results(codec) for codec in codecs}
  jobs = [(codec, setting, codec.setting_key(setting)) for codec in codecs
          for setting in codec.settings]
  skipped = results.data["skipped_images"]
  failures = results.data["failures"]
  measured = reused = failed = 0
  with tqdm(total=len(images) * len(jobs), unit="enc", file=sys.stderr, disable=not progress,
            dynamic_ncols=True) as bar:
    for path in images:
      name = path.name
      todo = [job for job in jobs if name not in tables[job[0].name].get(job[2], {})]
      reused += len(jobs) - len(todo)
      bar.update(len(jobs) - len(todo))
      if not todo:
        continue
      try:
        image = load_image(path)
      except Exception as e:  # pylint: disable=broad-except
        # Whatever Pillow raises for a corrupt file (OSError, SyntaxError, bomb errors...).
        skipped[name] = f"{type(e).__name__}: {e}"
        bar.write(f"tflic eval: skipping unreadable image {path}: {skipped[name]}",
                  file=sys.stderr)
        results.save()
        bar.update(len(todo))
        continue
      skipped.pop(name, None)
      for codec, setting, key in todo:
        bar.set_postfix_str(f"{codec.name} {key} {name}", refresh=False)
        failure_key = f"{codec.name}/{key}/{name}"
        try:
          tables[codec.name].setdefault(key, {})[name] = measure(codec, image, setting)
          failures.pop(failure_key, None)
          measured += 1
        except Exception as e:  # pylint: disable=broad-except
          # One failing encode must not cost the rest of a long run; it is retried next time.
          failures[failure_key] = f"{type(e).__name__}: {e}"
          bar.write(f"tflic eval: {failure_key} failed: {failures[failure_key]}",
                    file=sys.stderr)
          failed += 1
        results.save()
        bar.update(1)
  return Summary(measured, reused, failed,
                 {p.name: skipped[p.name] for p in images if p.name in skipped})
