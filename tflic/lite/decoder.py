"""A .tflic decoder without TensorFlow: LiteRT synthesis, the C entropy core.

`Decoder(model_dir)` reads what `python -m export.tflite` writes (manifest.json,
integer_entropy_model.npz, synthesis.tflite) and decodes files of the model it was
exported from: the header and checksum (`tflic.codec.bitstream`), the streams with the
portable C core (`tflic.codec.rangecoder.entropy_core`: the exact integer entropy model, the
coding loop and the range coder), then the synthesis in LiteRT. The decoded latents are the SavedModel's, integer for integer, and
checked against the file's latent check; only the float synthesis may differ from
TensorFlow's in the last bits of a pixel.
"""

import hashlib
import json
import os

import numpy as np

from tflic.codec import bitstream
from tflic.codec.deterministic import entropy_model
from tflic.codec import image_io
from tflic.codec.rangecoder import entropy_core
from tflic.codec import tiling
from tflic import errors
from tflic.lite import synthesis as synthesis_lib

MANIFEST = "manifest.json"


def read_manifest(model_dir):
  """The manifest of an export; TflicError if it is missing or for another format."""
  path = os.path.join(model_dir, MANIFEST)
  if not os.path.isdir(model_dir):
    raise errors.TflicError(f"model not found: {model_dir}")
  if not os.path.isfile(path):
    raise errors.TflicError(f"{model_dir} is not a LiteRT export (no {MANIFEST}; make one "
                            "with `python -m export.tflite --model=MODEL --out=DIR`)")
  try:
    with open(path, encoding="utf-8") as f:
      manifest = json.load(f)
  except (OSError, ValueError) as e:
    raise errors.TflicError(f"cannot read {path}: {e}") from None
  version = manifest.get("format_version")
  if version != bitstream.VERSION:
    raise errors.TflicError(f"{model_dir} was exported for tflic format version {version}; "
                            f"this decoder reads version {bitstream.VERSION}")
  return manifest


def _checked_file(model_dir, entry):
  """The path of a manifest's file, after checking its SHA-256: a damaged or swapped
  file would decode wrong images, or fail far from the cause."""
  path = os.path.join(model_dir, entry["name"])
  digest = hashlib.sha256()
  try:
    with open(path, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
  except OSError as e:
    raise errors.TflicError(f"cannot read {path}: {e.strerror or e}") from None
  if digest.hexdigest() != entry["sha256"]:
    raise errors.TflicError(f"{path} differs from the one its manifest lists (SHA-256 "
                            "mismatch): re-export the model")
  return path


def load_core(model_dir, paths):
  """The C entropy core of an export (`paths` from `checked_files`)."""
  try:
    with np.load(paths["entropy_model"]) as data:
      return entropy_core.Core({key: data[key] for key in data.files})
  except (OSError, ValueError, KeyError) as e:
    raise errors.TflicError(f"cannot load the entropy model of {model_dir}: {e}") from None


def checked_files(model_dir, manifest, roles):
  """role -> path of the files of an export that a coder needs, each checked against its
  SHA-256 (only those: the others are not read)."""
  files = manifest.get("files", {})
  for role in roles:
    if role not in files:
      raise errors.TflicError(
          f"{model_dir} has no {role} (exported without it; re-export the model with "
          "`python -m export.tflite`)")
  return {role: _checked_file(model_dir, files[role]) for role in roles}


class Decoder:
  """Decodes .tflic files of one exported model.

  Args:
    model_dir: a directory written by `python -m export.tflite`.
    num_threads: LiteRT threads for the synthesis (None: this process's CPUs).
    tile_budget: bytes of synthesis activations a tile may take (`tflic.codec.tiling`).
  """

  def __init__(self, model_dir, num_threads=None, tile_budget=tiling.DEFAULT_BUDGET_BYTES):
    manifest = read_manifest(model_dir)
    # The synthesis runs in tiles (tflic.codec.tiling), as the SavedModel codec's does.
    self.model_config = manifest["config"]["model"]
    self.tile_budget = tile_budget
    self.fingerprint = bytes.fromhex(manifest["fingerprint"])
    self.mode = manifest["context_mode"]
    paths = checked_files(model_dir, manifest, ("entropy_model", "synthesis"))
    self.core = load_core(model_dir, paths)
    self.synthesis = synthesis_lib.Synthesis(paths["synthesis"], num_threads=num_threads)
    self._costs = (tuple(self.core.y_cost), tuple(self.core.z_cost))

  def decode_latent(self, data, max_pixels=image_io.DEFAULT_MAX_PIXELS, progress=None):
    """(Header, integer latent y_hat [1, h, w, M] float64) of a file's bytes.

    Files declaring more than max_pixels pixels, or more symbols than their streams can
    hold, are refused before any allocation. progress(stage, done, total), if given,
    hears ("coding", chunks decoded, chunks) as the coding loop advances."""
    header, z_stream, y_stream = bitstream.unpack(data)
    bitstream.check_model(header, self.fingerprint, self.mode)
    bitstream.check_declared_size(header, self.core.latent_channels,
                                  self.core.hyper_channels, *self._costs, max_pixels)
    coding = self.core.coding_progress(progress, *bitstream.latent_grid(header.height,
                                                                         header.width))
    try:
      _, y_hat = self.core.decode(header.height, header.width, z_stream, y_stream,
                                  header.latent_check, max_pixels, progress=coding)
    except entropy_core.CoreError as e:
      raise errors.TflicError(f"decoding failed: {e}") from None
    return header, y_hat

  def decompress(self, data, max_pixels=image_io.DEFAULT_MAX_PIXELS, progress=None):
    """.tflic file bytes -> uint8 [H, W, 3], as the SavedModel's `decompress`.
    progress(stage, done, total), if given, hears of the stages and their steps
    (`tflic.codec.progress`)."""
    header, y_hat = self.decode_latent(data, max_pixels, progress)
    return self.synthesize(header, y_hat, progress=progress)

  def synthesize(self, header, y_hat, tile_kept=None, progress=None):
    """The uint8 image [H, W, 3] of a decoded latent (`decode_latent`), tile by tile
    (`tile_kept`: for tests, the kept side of a tile in latents)."""
    quality = np.float32(header.quality_code) / np.float32(bitstream.QUALITY_STEPS)

    def synthesize(piece):
      image = self.synthesis((piece / entropy_model.ONE).astype(np.float32), quality)[0]
      return np.round(np.clip(image * np.float32(255), 0, 255)).astype(np.uint8)

    tiles = tiling.plan(header.height, header.width, self.model_config, self.tile_budget,
                        tile_kept)
    return tiling.synthesize_tiles(synthesize, y_hat, tiles, header.height, header.width,
                                   progress)
