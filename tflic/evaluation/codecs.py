"""Codecs under evaluation: a small interface, classical codecs and a registry by name.

Every codec maps an RGB uint8 image (H x W x 3) and one setting of its quality knob to the exact
bytes of a file, and those bytes back to an image through the real decoder. The harness takes the
rate from these bytes, so containers and headers are counted.
"""

import abc
import importlib
import io
import os
import shutil
import subprocess
import tempfile
from typing import Any, Dict, Optional, Sequence, Type

import numpy as np
import PIL
from PIL import features
from PIL import Image

from tflic import errors


class Codec(abc.ABC):
  """An image codec with a one-dimensional quality knob.

  Subclasses set `name`, `default_settings`, `setting_range` (inclusive bounds) and
  `integer_settings`, and implement `encode` and `decode`.
  """

  name: str = ""
  default_settings: Sequence[float] = ()
  setting_range = (0.0, 100.0)
  integer_settings = False
  # What the setting means, for tables and plots (a larger QP means fewer bits, for example).
  setting_label = "quality"
  needs_model = False

  def __init__(self, settings: Optional[Sequence[float]] = None):
    settings = self.default_settings if settings is None else settings
    if not settings:
      raise errors.TflicError(f"codec {self.name}: no settings given")
    self.settings = [self._check_setting(s) for s in settings]

  def _check_setting(self, setting):
    low, high = self.setting_range
    if not low <= setting <= high:
      raise errors.TflicError(
          f"codec {self.name}: setting {setting:g} is outside [{low:g}, {high:g}]")
    if self.integer_settings:
      if setting != int(setting):
        raise errors.TflicError(f"codec {self.name}: setting {setting:g} must be an integer")
      return int(setting)
    return float(setting)

  @staticmethod
  def setting_key(setting) -> str:
    """The string under which a setting is stored in results.json."""
    return f"{setting:g}"

  @classmethod
  def unavailable_reason(cls) -> Optional[str]:
    """Why this codec cannot run on this machine, or None if it can."""
    return None

  def config(self) -> Dict[str, Any]:
    """Options that change the bitstream; resuming with different options is refused."""
    return {}

  @abc.abstractmethod
  def encode(self, image: np.ndarray, setting) -> bytes:
    """Compresses an H x W x 3 uint8 image into the bytes of a file."""

  @abc.abstractmethod
  def decode(self, data: bytes) -> np.ndarray:
    """Decodes the bytes written by `encode` into an H x W x 3 uint8 image."""


def _to_rgb_array(image: Image.Image) -> np.ndarray:
  # convert() forces the full decode, so decode timings include all of it.
  return np.asarray(image.convert("RGB"))


class PillowCodec(Codec):
  """A codec that Pillow encodes and decodes; subclasses give the save options."""

  pillow_format = ""
  pillow_feature = None  # Name for PIL.features.check, if the codec is optional in Pillow.

  @classmethod
  def unavailable_reason(cls):
    if cls.pillow_feature and not features.check(cls.pillow_feature):
      return f"this Pillow has no {cls.pillow_feature} support"
    return None

  @abc.abstractmethod
  def save_options(self, image: np.ndarray, setting) -> Dict[str, Any]:
    """Keyword arguments of Image.save for one setting."""

  def config(self):
    return {"pillow": PIL.__version__, "format": self.pillow_format}

  def encode(self, image, setting):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=self.pillow_format,
                                **self.save_options(image, setting))
    return buffer.getvalue()

  def decode(self, data):
    return _to_rgb_array(Image.open(io.BytesIO(data)))


class JpegCodec(PillowCodec):
  """Baseline JPEG through Pillow's libjpeg(-turbo), with optimized Huffman tables."""

  name = "jpeg"
  pillow_format = "JPEG"
  default_settings = (5, 10, 25, 50, 75)
  setting_range = (1, 100)
  integer_settings = True
  subsampling = "4:2:0"

  def save_options(self, image, setting):
    # optimize=True only changes the entropy coder's tables: the same pixels in fewer bytes,
    # as any careful JPEG encode (cjpeg -optimize, mozjpeg) would write.
    return {"quality": setting, "subsampling": self.subsampling, "optimize": True}

  def config(self):
    return {**super().config(), "subsampling": self.subsampling, "optimize": True,
            "libjpeg": features.version("jpg")}


class Jpeg444Codec(JpegCodec):
  """JPEG without chroma subsampling."""

  name = "jpeg444"
  subsampling = "4:4:4"


class WebpCodec(PillowCodec):
  """Lossy WebP (libwebp) at its slowest, best-compressing method."""

  name = "webp"
  pillow_format = "WEBP"
  pillow_feature = "webp"
  default_settings = (0, 10, 40, 70, 85)
  method = 6

  def save_options(self, image, setting):
    return {"quality": setting, "method": self.method}

  def config(self):
    return {**super().config(), "method": self.method, "libwebp": features.version("webp")}


class AvifCodec(PillowCodec):
  """AVIF (libavif with aom) in 4:4:4, as avifenc writes RGB input by default."""

  name = "avif"
  pillow_format = "AVIF"
  pillow_feature = "avif"
  default_settings = (10, 25, 45, 60, 70)
  integer_settings = True
  speed = 4
  subsampling = "4:4:4"

  def save_options(self, image, setting):
    return {"quality": setting, "speed": self.speed, "subsampling": self.subsampling}

  def config(self):
    return {**super().config(), "speed": self.speed, "subsampling": self.subsampling,
            "libavif": features.version("avif")}


class Jpeg2000Codec(PillowCodec):
  """JPEG 2000 (OpenJPEG) with the irreversible 9/7 wavelet and colour transform.

  Pillow's defaults (reversible 5/3 wavelet, no colour transform) are meant for lossless coding
  and would make a weak lossy baseline. The setting is the target rate in bits per pixel, which
  OpenJPEG's rate control ("rates" mode: compression ratio) hits closely.
  """

  name = "jpeg2000"
  pillow_format = "JPEG2000"
  pillow_feature = "jpg_2000"
  default_settings = (0.1, 0.25, 0.5, 0.9, 1.5)
  setting_range = (0.01, 24.0)
  setting_label = "bpp target"

  def save_options(self, image, setting):
    # OpenJPEG needs every resolution level to be at least one pixel wide.
    levels = min(6, int(np.log2(min(image.shape[:2]))) + 1)
    return {
        "quality_mode": "rates",
        "quality_layers": [24.0 / setting],  # Ratio to the 24 bpp raw image.
        "irreversible": True,
        "mct": 1,
        "num_resolutions": levels,
        "no_jp2": True,  # The bare codestream: the JP2 boxes carry nothing needed here.
    }

  def config(self):
    return {**super().config(), "irreversible": True, "mct": 1, "container": "j2k",
            "openjpeg": features.version("jpg_2000")}


class ExternalToolCodec(Codec):
  """A codec run through command-line tools on temporary files.

  Its timings include process start-up and the temporary PNG files, tens of milliseconds.
  """

  tools: Sequence[str] = ()
  suffix = ""

  @classmethod
  def unavailable_reason(cls):
    missing = [tool for tool in cls.tools if shutil.which(tool) is None]
    return f"{', '.join(missing)} not found on PATH" if missing else None

  @abc.abstractmethod
  def encode_command(self, png_path: str, out_path: str, setting) -> Sequence[str]:
    """The command that encodes png_path into out_path."""

  @abc.abstractmethod
  def decode_command(self, in_path: str, png_path: str) -> Sequence[str]:
    """The command that decodes in_path into a PNG file png_path."""

  @staticmethod
  def _run(command):
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0:
      message = result.stderr.decode(errors="replace").strip().splitlines()
      raise RuntimeError(f"{command[0]} failed ({result.returncode}): "
                         f"{message[-1] if message else 'no message'}")

  def encode(self, image, setting):
    with tempfile.TemporaryDirectory() as tmp:
      png_path, out_path = os.path.join(tmp, "in.png"), os.path.join(tmp, "out" + self.suffix)
      Image.fromarray(image).save(png_path, compress_level=1)
      self._run(self.encode_command(png_path, out_path, setting))
      with open(out_path, "rb") as f:
        return f.read()

  def decode(self, data):
    with tempfile.TemporaryDirectory() as tmp:
      in_path, png_path = os.path.join(tmp, "in" + self.suffix), os.path.join(tmp, "out.png")
      with open(in_path, "wb") as f:
        f.write(data)
      self._run(self.decode_command(in_path, png_path))
      with Image.open(png_path) as image:
        return _to_rgb_array(image)

  def config(self):
    return {"tools": {tool: _tool_version(tool) for tool in self.tools},
            "encode": " ".join(self.encode_command("IN", "OUT", "SETTING")),
            "decode": " ".join(self.decode_command("IN", "OUT"))}


def _tool_version(tool):
  result = subprocess.run([tool, "-version" if tool == "ffmpeg" else "--version"],
                          capture_output=True, check=False)
  lines = (result.stdout or result.stderr).decode(errors="replace").strip().splitlines()
  return lines[0].split(" Copyright")[0] if lines else "unknown"


class JpegXlCodec(ExternalToolCodec):
  """JPEG XL through libjxl's cjxl/djxl at the default effort."""

  name = "jxl"
  tools = ("cjxl", "djxl")
  suffix = ".jxl"
  default_settings = (5, 25, 55, 75, 88)
  # Lower qualities map to butteraugli distances beyond what cjxl accepts (25).
  setting_range = (5, 100)

  def encode_command(self, png_path, out_path, setting):
    return ["cjxl", png_path, out_path, "-q", str(setting), "--quiet"]

  def decode_command(self, in_path, png_path):
    return ["djxl", in_path, png_path, "--quiet"]


class X265Codec(ExternalToolCodec):
  """HEVC intra (x265 through ffmpeg) in full-range BT.709 YCbCr 4:4:4: a BPG stand-in.

  BPG is an HEVC intra frame in a small container; this writes the raw Annex-B stream, without
  x265's SEI message that spells out its settings (hundreds of bytes per image). x265 is tuned
  for PSNR: its default psycho-visual tuning costs about 0.7 dB at equal rate on Kodak.
  """

  name = "x265"
  tools = ("ffmpeg",)
  suffix = ".hevc"
  default_settings = (45, 40, 35, 30, 26)
  setting_range = (0, 51)
  integer_settings = True
  setting_label = "QP"
  # Without these, swscale rounds loosely and defaults to limited-range BT.601.
  _sws_flags = ["-sws_flags", "accurate_rnd+full_chroma_int+bitexact"]

  def encode_command(self, png_path, out_path, setting):
    return ["ffmpeg", "-v", "error", "-y", "-i", png_path, *self._sws_flags,
            "-vf", "scale=out_color_matrix=bt709:out_range=full,format=yuv444p",
            "-color_range", "pc", "-colorspace", "bt709",
            "-c:v", "libx265", "-preset", "medium", "-tune", "psnr",
            "-x265-params", f"qp={setting}:keyint=1:info=0:log-level=error",
            "-frames:v", "1", "-f", "hevc", out_path]

  def decode_command(self, in_path, png_path):
    return ["ffmpeg", "-v", "error", "-y", "-i", in_path, *self._sws_flags,
            "-vf", "scale=in_color_matrix=bt709:in_range=full,format=rgb24",
            "-frames:v", "1", png_path]


class TflicCodec(Codec):
  """The learned codec, swept through its continuous quality knob in [0, 1]."""

  name = "tflic"
  default_settings = (0.1, 0.3, 0.5, 0.7, 0.9)
  setting_range = (0.0, 1.0)
  needs_model = True

  def __init__(self, settings=None, model_path=None, refine_steps=0):
    super().__init__(settings)
    self.refine_steps = refine_steps
    try:
      # Imported here: it loads TensorFlow models, which classical evaluations do not need.
      tflic_codec = importlib.import_module("tflic.codec")
    except ImportError as e:
      raise errors.TflicError(f"codec tflic is unavailable: cannot import tflic.codec ({e})") from e
    # Without --model, the model bundled with the package.
    model_path = model_path or tflic_codec.default_model_path()
    self.model_path = model_path
    try:
      self._model = tflic_codec.load(model_path)
    except errors.TflicError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise errors.TflicError(f"cannot load tflic model {model_path}: {e}") from e

  def config(self):
    # The weights' fingerprint (as files' headers carry it), not the path: a report then
    # resumes from another checkout or machine, and refuses another model at the same path
    # (a replaced bundled model) instead of mixing the two models' results.
    config = {"model_fingerprint": self._model.fingerprint.hex()}
    if self.refine_steps:  # absent when 0, so earlier results files still resume
      config["refine_steps"] = self.refine_steps
    return config

  def encode(self, image, setting):
    return self._model.compress(image, setting, refine_steps=self.refine_steps)

  def decode(self, data):
    # No cast: the harness rejects anything but uint8 rather than hiding a wrong range.
    return np.asarray(self._model.decompress(data))


# Name -> codec class. Classes with `needs_model` get --model and --refine_steps as well.
CODECS: Dict[str, Type[Codec]] = {}


def register(cls: Type[Codec]) -> Type[Codec]:
  """Makes a codec class available to `make_codec` and the --codecs flag under `cls.name`."""
  CODECS[cls.name] = cls
  return cls


for _cls in (JpegCodec, Jpeg444Codec, WebpCodec, AvifCodec, Jpeg2000Codec, JpegXlCodec,
             X265Codec, TflicCodec):
  register(_cls)


def make_codec(name: str, settings: Optional[Sequence[float]] = None,
               model_path: Optional[str] = None, refine_steps: int = 0) -> Codec:
  """Builds the codec registered as `name`; raises TflicError for an unknown name."""
  if name not in CODECS:
    raise errors.TflicError(f"unknown codec {name!r}; known: {', '.join(sorted(CODECS))}")
  cls = CODECS[name]
  if cls.needs_model:
    return cls(settings, model_path=model_path, refine_steps=refine_steps)
  return cls(settings)
