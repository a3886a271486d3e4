"""Image and file I/O for the command line: 8-bit RGB arrays in, atomic writes out.

Every failure a user can cause (a missing or unreadable file, something that is not an
image, an image too large to decode safely, an output that cannot be written) raises
`tflic.errors.TflicError` with a one-line message. Writes go to a temporary file in the
output's directory that is renamed over the output only once complete, so a failed or
interrupted run never leaves a partial output behind.
"""

import contextlib
import io
import logging
import os
import secrets

import numpy as np
from PIL import Image

from tflic import errors

# Standard logging (absl's handler prints it in `tflic`): the TF-free decoder (tflic.lite)
# uses this module without absl.
_LOG = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 100_000_000
# Only formats we mean to accept: Pillow's other plugins (EPS runs Ghostscript, for
# one) are more attack surface than a codec's input needs.
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
_DESCRIPTIONS = {
    "1": "1-bit black-and-white",
    "L": "grayscale",
    "LA": "grayscale",
    "P": "palette",
    "PA": "palette",
    "RGBA": "RGBA",
    "RGBa": "RGBA",
    "CMYK": "CMYK",
}


def read_bytes(path):
  """The contents of a file; TflicError if it cannot be read."""
  path = os.fspath(path)
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:
    raise errors.TflicError(f"cannot read {path}: {_reason(e)}") from None


def read_image(path, max_pixels=DEFAULT_MAX_PIXELS):
  """Reads an image file as uint8 [H, W, 3] RGB.

  Grayscale, palette, alpha and 16-bit images are converted, with a one-line warning.

  Args:
    path: the image file (PNG, JPEG, WebP, BMP or TIFF).
    max_pixels: refuse images with more pixels than this, before decoding them (so a
      small file cannot make us allocate gigabytes); None for no limit.

  Returns:
    A uint8 numpy array of shape [H, W, 3].

  Raises:
    TflicError: the file is missing, not a supported image, corrupt or too large.
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    raise errors.TflicError(f"cannot read {path}: is a directory")
  try:
    with _pillow_size_limit_disabled():
      image = Image.open(path, formats=FORMATS)  # reads only the header
    with image:
      width, height = image.size
      if max_pixels is not None and width * height > max_pixels:
        raise errors.TflicError(
            f"{path}: image is {width}x{height} = {width * height} pixels, more than the "
            f"limit of {max_pixels} (see --max_pixels)")
      if not width or not height:
        raise errors.TflicError(f"{path}: image is empty ({width}x{height})")
      # Pillow reduces 16-bit RGB to 8 bits itself; only the undecoded tiles tell.
      sixteen_bit_rgb = image.mode == "RGB" and any(";16" in str(t.args) for t in image.tile)
      image.load()
      if sixteen_bit_rgb:
        _LOG.warning("%s: converted 16-bit RGB to 8-bit RGB", path)
      return _to_rgb8(image, path)
  except Image.UnidentifiedImageError:
    raise errors.TflicError(
        f"{path}: not a {', '.join(FORMATS[:-1])} or {FORMATS[-1]} image") from None
  except (OSError, SyntaxError, ValueError, EOFError) as e:
    # Pillow reports truncated and corrupt data as any of these; only the file system's
    # own errors (missing, permission denied) carry an errno.
    if isinstance(e, OSError) and e.errno is not None:
      raise errors.TflicError(f"cannot read {path}: {_reason(e)}") from None
    raise errors.TflicError(f"{path}: corrupt or unsupported image ({_reason(e)})") from None


@contextlib.contextmanager
def _pillow_size_limit_disabled():
  # Pillow's own fixed decompression-bomb limit (~89M pixels warns, ~179M fails) would
  # override max_pixels, and its warning is one more stderr line; read_image checks the
  # size itself, right after the header is read.
  saved = Image.MAX_IMAGE_PIXELS
  Image.MAX_IMAGE_PIXELS = None
  try:
    yield
  finally:
    Image.MAX_IMAGE_PIXELS = saved


def _to_rgb8(image, path):
  """uint8 RGB pixels of a loaded Pillow image, warning about any conversion."""
  mode = image.mode
  if mode == "RGB":
    return np.asarray(image, dtype=np.uint8)
  if mode in _SIXTEEN_BIT_MODES:
    _LOG.warning("%s: converted 16-bit grayscale (mode %s) to 8-bit RGB", path, mode)
    values = np.asarray(image).astype(np.float64)
    gray = np.round(np.clip(values, 0, 65535) / 257.0).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)
  description = _DESCRIPTIONS.get(mode, f"mode {mode}")
  if mode in _ALPHA_MODES or "transparency" in image.info:
    description += ", alpha dropped"
    # Pillow only applies palette transparency on the way through RGBA.
    image = image.convert("RGBA")
  _LOG.warning("%s: converted %s image to RGB", path, description)
  return np.asarray(image.convert("RGB"), dtype=np.uint8)


def plan_outputs(args, usage, out_suffix):
  """(input, output) pairs from a command's positional arguments `IN [IN2 ...] OUT|OUTDIR`.

  An existing directory as the last argument takes one output per input, named after it
  with `out_suffix`; TflicError if the arguments do not fit `usage`.
  """
  if len(args) < 2:
    raise errors.TflicError(f"expected {usage}, got {len(args)} argument(s)")
  *inputs, output = args
  if os.path.isdir(output):
    return [(src, os.path.join(output, _stem(src) + out_suffix)) for src in inputs]
  if len(inputs) > 1 or output.endswith(("/", os.sep)):
    raise errors.TflicError(f"output directory {output} does not exist")
  return [(inputs[0], output)]


def _stem(path):
  return os.path.splitext(os.path.basename(os.path.normpath(path)))[0]


def check_output(path, overwrite=False):
  """Raises TflicError if `path` cannot be created, or exists and overwrite is False."""
  path = os.fspath(path)
  if os.path.isdir(path):
    raise errors.TflicError(f"cannot write {path}: is a directory")
  if os.path.lexists(path) and not overwrite:
    raise errors.TflicError(f"{path} exists; pass --overwrite to replace it")
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    raise errors.TflicError(f"cannot write {path}: directory {directory} does not exist")


def atomic_write(path, data, overwrite=False):
  """Writes bytes to `path` all at once: via a temporary file that replaces it at the end.

  Args:
    path: the output file.
    data: the bytes to write.
    overwrite: replace an existing file instead of raising TflicError.

  Raises:
    TflicError: the output exists (and not overwrite) or cannot be written. The temporary
      file is removed on any failure, including KeyboardInterrupt.
  """
  path = os.fspath(path)
  check_output(path, overwrite)
  directory, name = os.path.split(os.path.abspath(path))
  # Same directory, so that os.replace is a rename within one filesystem.
  temp = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
  try:
    with open(temp, "xb") as f:
      f.write(data)
      f.flush()
      # Without this a crash soon after the rename can leave an empty file.
      os.fsync(f.fileno())
    os.replace(temp, path)
  except OSError as e:
    _remove_quietly(temp)
    raise errors.TflicError(f"cannot write {path}: {_reason(e)}") from None
  except BaseException:
    _remove_quietly(temp)
    raise


def write_png(path, image, overwrite=False):
  """Writes uint8 [H, W, 3] pixels as a PNG file, atomically (see `atomic_write`)."""
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(f"expected uint8 [H, W, 3] pixels, got {image.dtype} {image.shape}")
  check_output(path, overwrite)  # before spending time on encoding
  buffer = io.BytesIO()
  Image.fromarray(image, "RGB").save(buffer, format="PNG")
  atomic_write(path, buffer.getvalue(), overwrite)


def _remove_quietly(path):
  with contextlib.suppress(OSError):
    os.remove(path)


def _reason(error):
  """A short, one-line reason for an OSError or a Pillow error."""
  if isinstance(error, OSError) and error.strerror:
    return error.strerror
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__
