"""The .tflic file format (see docs/bitstream.md): a fixed 32-byte header, then streams.

This module reads and writes headers in Python (for `tflic info`, and for clear errors
before any decoding). The codec's TensorFlow graph writes and checks the same layout with
TF ops (at the offsets of `FIELDS`), so that an exported SavedModel decodes files without
this module.

Version 2 (this one) codes with the integer entropy model and carries a check of the
decoded latents. Version 1 files, coded with a float entropy model that only decoded on
the encoder's runtime and thread count, are refused with a message saying so.
"""

import dataclasses
import os
import struct
import zlib

import numpy as np

from tflic import errors

MAGIC = b"TFLC"
VERSION = 2
# (name, struct code) of the header fields, in order.
_FIELDS = (("magic", "4s"), ("version", "B"), ("flags", "B"), ("fingerprint", "8s"),
           ("height", "H"), ("width", "H"), ("quality", "H"), ("z_bytes", "I"),
           ("y_bytes", "I"), ("latent_check", "Q"), ("checksum", "I"))
HEADER_FORMAT = "<" + "".join(code for _, code in _FIELDS)
HEADER_SIZE = struct.calcsize(HEADER_FORMAT)  # 40


def _layout():
  offset, layout = 0, {}
  for name, code in _FIELDS:
    size = struct.calcsize("<" + code)
    layout[name] = (offset, size)
    offset += size
  return layout


FIELDS = _layout()  # name -> (offset, size) in bytes
CHECKSUM_OFFSET = FIELDS["checksum"][0]
MIN_SIDE = 1
MAX_SIDE = 65535
QUALITY_STEPS = 65535  # quality is stored as round(quality * 65535)
MODE_FLAGS = {"wavefront": 0, "serial": 1}
LATENT_STRIDE = 16  # image pixels per latent position, each way
HYPER_STRIDE = 4  # latent positions per hyper-latent position, each way
# The stream-length rule (docs/bitstream.md): a stream of B bytes coded with tables of
# cost (d, p) holds at most (B + STREAM_SLACK_BYTES) * 2^(p+3) / d symbols.
STREAM_SLACK_BYTES = 8
# What every decoder says when the decoded latents fail the file's latent check.
DESYNC_MESSAGE = ("decoded latents differ from the encoder's (desync: another entropy "
                  "model or a corrupt stream)")


@dataclasses.dataclass(frozen=True)
class Header:
  """Decoded header fields of a .tflic file."""
  version: int
  mode: str
  fingerprint: bytes
  height: int
  width: int
  quality_code: int
  z_bytes: int
  y_bytes: int
  latent_check: int
  checksum: int

  @property
  def quality(self):
    """The quality the encoder used (quantized to 1/65535)."""
    return self.quality_code / QUALITY_STEPS


def quality_code(quality):
  """The uint16 code of a quality in [0, 1] (encoder and decoder use code / 65535),
  computed in float32 as the SavedModel's graph does (round half to even); TflicError
  outside [0, 1]."""
  if not 0.0 <= quality <= 1.0:
    raise errors.TflicError(f"quality must be in [0, 1], got {quality}")
  return int(np.round(np.float32(quality) * np.float32(QUALITY_STEPS)))


def checksum(data):
  """Adler-32 of a file without its checksum field (what the header stores)."""
  return zlib.adler32(data[:CHECKSUM_OFFSET] + data[HEADER_SIZE:])


def pack(mode, fingerprint, height, width, quality_code, z_stream, y_stream, latent_check):
  """A complete .tflic file from its parts."""
  head = struct.pack(HEADER_FORMAT, MAGIC, VERSION, MODE_FLAGS[mode], fingerprint, height,
                     width, quality_code, len(z_stream), len(y_stream), latent_check, 0)
  data = head + z_stream + y_stream
  return data[:CHECKSUM_OFFSET] + struct.pack("<I", checksum(data)) + data[HEADER_SIZE:]


def unpack(data):
  """(Header, z_stream, y_stream) of a .tflic file; TflicError if it is not a valid one."""
  if len(data) >= 5 and data[:4] == MAGIC and data[4] == 1:
    raise errors.TflicError("this file is format version 1 (float entropy model, tflic "
                            "0.1), which this decoder no longer reads; decode it with "
                            "tflic 0.1 on the machine that wrote it")
  if len(data) < HEADER_SIZE:
    raise errors.TflicError(f"not a tflic file: {len(data)} bytes, shorter than a header")
  (magic, version, flags, fingerprint, height, width, quality_code, z_bytes, y_bytes,
   latent_check, stored_checksum) = struct.unpack(HEADER_FORMAT, data[:HEADER_SIZE])
  if magic != MAGIC:
    raise errors.TflicError("not a tflic file (bad magic bytes)")
  if version != VERSION:
    raise errors.TflicError(f"unsupported tflic format version {version} (this is {VERSION})")
  modes = {v: k for k, v in MODE_FLAGS.items()}
  if flags not in modes:
    raise errors.TflicError(f"corrupt tflic file: unknown flags {flags:#x}")
  expected = HEADER_SIZE + z_bytes + y_bytes
  if len(data) != expected:
    what = "truncated" if len(data) < expected else "has trailing bytes"
    raise errors.TflicError(f"corrupt tflic file: {what} ({len(data)} bytes, header says "
                            f"{expected})")
  if checksum(data) != stored_checksum:
    raise errors.TflicError("corrupt tflic file: checksum mismatch")
  if not height or not width:
    raise errors.TflicError("corrupt tflic file: zero image size")
  header = Header(version, modes[flags], fingerprint, height, width, quality_code, z_bytes,
                  y_bytes, latent_check, stored_checksum)
  z_stream = data[HEADER_SIZE:HEADER_SIZE + z_bytes]
  return header, z_stream, data[HEADER_SIZE + z_bytes:]


def check_model(header, fingerprint, mode):
  """TflicError unless a file's header names this model (its weights fingerprint) and
  its decoding order: a decoder's first check, before any work."""
  if header.fingerprint != fingerprint:
    raise errors.TflicError(
        f"bitstream was written with a different model (fingerprint "
        f"{header.fingerprint.hex()}, this model {fingerprint.hex()})")
  if header.mode != mode:
    raise errors.TflicError(f"bitstream was coded in {header.mode} order; this model "
                            f"decodes {mode}")


def latent_grid(height, width):
  """(h, w): the latent grid of an image, ceil(side / 16)."""
  return -(-height // LATENT_STRIDE), -(-width // LATENT_STRIDE)


def hyper_grid(height, width):
  """(hz, wz): the hyper-latent grid of an image, ceil(h / 4)."""
  latent_height, latent_width = latent_grid(height, width)
  return -(-latent_height // HYPER_STRIDE), -(-latent_width // HYPER_STRIDE)


def symbol_cost(cdf_table):
  """(d, p): every symbol coded with this range coder lookup table costs more than
  d / 2^p bits.

  A row of precision p whose likeliest symbol has frequency 2^p - d codes any symbol
  with probability at most 1 - d/2^p, which costs -log2(1 - d/2^p) > d/2^p bits. Exact
  integers, so every decoder derives the same bound from the same stored table.
  """
  table = np.asarray(cdf_table, np.int64).reshape(-1)
  best, i = None, 0
  while i < len(table):
    precision = abs(int(table[i]))
    total = 1 << precision
    end = i + 1 + int(np.argmax(table[i + 1:] == total))  # the row's last entry
    d = total - int(np.max(np.diff(table[i + 1:end + 1])))
    if best is None or d << best[1] < best[0] << precision:
      best = (d, precision)
    i = end + 1
    while i < len(table) and table[i] == total:  # padding after the row
      i += 1
  return best


def stream_holds(num_symbols, num_bytes, cost):
  """True if a stream of num_bytes may hold num_symbols symbols of tables of this cost
  (`symbol_cost`): the check that bounds a decoder's work by the file's length."""
  d, precision = cost
  return num_symbols * d <= (num_bytes + STREAM_SLACK_BYTES) << (precision + 3)


def min_stream_bytes(num_symbols, cost):
  """The fewest bytes a stream of num_symbols symbols may have (the encoder pads shorter
  streams with zero bytes, which decode as the zeros a decoder reads past the end)."""
  d, precision = cost
  return max(0, -(-num_symbols * d >> (precision + 3)) - STREAM_SLACK_BYTES)


def check_declared_size(header, latent_channels, hyper_channels, y_cost, z_cost,
                        max_pixels):
  """TflicError unless a header's image size is within max_pixels and its streams are
  long enough to hold that many symbols: checked before a decoder allocates anything."""
  pixels = header.height * header.width
  if pixels > max_pixels:
    raise errors.TflicError(f"image of {header.width}x{header.height} = {pixels} pixels "
                            f"exceeds the limit of {max_pixels} (--max_pixels)")
  latent_height, latent_width = latent_grid(header.height, header.width)
  hyper_height, hyper_width = hyper_grid(header.height, header.width)
  for name, symbols, num_bytes, cost in (
      ("z", hyper_height * hyper_width * hyper_channels, header.z_bytes, z_cost),
      ("y", latent_height * latent_width * latent_channels, header.y_bytes, y_cost)):
    if not stream_holds(symbols, num_bytes, cost):
      raise errors.TflicError(
          f"corrupt tflic file: a {num_bytes}-byte {name} stream cannot hold the {symbols} "
          f"symbols of a {header.width}x{header.height} image")


# Where an export keeps its integer entropy model and coding tables (numpy, no TensorFlow).
MODEL_ASSET = os.path.join("assets", "integer_entropy_model.npz")


def check_declared_size_for_export(model_dir, header, max_pixels):
  """`check_declared_size` with the sizes and table costs of an exported SavedModel,
  read from its entropy model asset: a decoder runs it before it loads the model (seconds
  and a gigabyte), so a small file that breaks the rules costs no more than its header.
  Does nothing for a directory without the asset (a training directory: checked later)."""
  path = os.path.join(model_dir, MODEL_ASSET)
  if not os.path.isfile(path):
    return
  try:
    with np.load(path) as data:
      sizes = (int(data["config/latent_channels"]), int(data["config/hyper_channels"]))
      costs = (symbol_cost(data["tables/y_cdf"]), symbol_cost(data["tables/z_cdf"]))
  except (OSError, ValueError, KeyError):
    return  # the model's own load reports a damaged export
  check_declared_size(header, *sizes, *costs, max_pixels)
