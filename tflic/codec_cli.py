"""`tflic compress`, `tflic decompress` and `tflic info` (dispatched by tflic/cli.py).

  tflic compress [--model=PATH] [--quality=Q] [--refine_steps=N] IN.png OUT.tflic
  tflic compress --target_bpp=B | --target_bytes=N IN.png OUT.tflic   # size budget
  tflic compress a.png b.jpg OUTDIR/          # OUTDIR/a.tflic, OUTDIR/b.tflic
  tflic compress a.png b.jpg --out_dir=OUTDIR # the same
  tflic decompress [--model=PATH] IN.tflic OUT.png
  tflic decompress a.tflic b.tflic OUTDIR/    # OUTDIR/a.png, OUTDIR/b.png
  tflic info IN.tflic [...]
  tflic compress --runtime=tf ...             # the SavedModel, in TensorFlow

compress and decompress run on the fast path by default: the networks in LiteRT
(tflic/bundled/lite, or a --model written by `python -m export.tflite`) and the entropy
model and range coder in the C core (tflic.lite), without importing TensorFlow. The
SavedModel path (--runtime=tf) writes and reads the same files; it is taken
automatically for --refine_steps (which needs TensorFlow's gradients) and for a --model
that is a SavedModel or a training directory.

With several inputs a bad one is reported on one line and the rest are still processed;
the exit status is 2 if any failed. Several inputs share one loaded model. `info`
reads headers only; tflic.codec (which imports TensorFlow) is imported only on the
SavedModel path.
"""

import atexit
import functools
import os
import sys
import time

from absl import flags
import tqdm

import tflic
from tflic.codec import bitstream
from tflic.codec import image_io
from tflic.codec import progress as progress_lib
from tflic.codec import rate_control
from tflic.codec import tiling
from tflic import common_flags
from tflic import errors

_MODEL = common_flags.MODEL
_OVERWRITE = common_flags.OVERWRITE
_REFINE_STEPS = common_flags.REFINE_STEPS
_QUALITY = flags.DEFINE_float(
    "quality", 0.5, "Rate-distortion trade-off in [0, 1]; higher is larger and better.",
    lower_bound=0.0, upper_bound=1.0)
_TARGET_BPP = flags.DEFINE_float(
    "target_bpp", None, "Instead of --quality: the highest quality whose file has at most "
    "this many bits per pixel (searched, several encodes per image).")
flags.register_validator("target_bpp", lambda v: v is None or v > 0,
                         message="--target_bpp must be positive")
_TARGET_BYTES = flags.DEFINE_integer(
    "target_bytes", None, "Instead of --quality: the highest quality whose file has at "
    "most this many bytes (searched, several encodes per image).", lower_bound=1)
_MAX_PIXELS = flags.DEFINE_integer(
    "max_pixels", image_io.DEFAULT_MAX_PIXELS,
    "Refuse images with more pixels than this (protects against decompression bombs).",
    lower_bound=1)
_RUNTIME = flags.DEFINE_enum(
    "runtime", "auto", ["auto", "lite", "tf"],
    "lite: LiteRT networks and the C entropy core, no TensorFlow (the bundled model's "
    "LiteRT files, or a --model written by `python -m export.tflite`); tf: the SavedModel "
    "(or a training directory) in TensorFlow; auto: lite where the model has LiteRT files "
    "and the options allow it (--refine_steps, and compressing an image larger than one "
    "tile, need tf). Both write and read the same files.")
_TILE_MEMORY = flags.DEFINE_integer(
    "tile_memory_mib", tiling.DEFAULT_BUDGET_BYTES >> 20,
    "Memory for the transforms' activations, in MiB: larger images are analysed and "
    "synthesized in overlapping tiles of this size (the same on any machine; the files "
    "do not depend on it beyond float rounding).", lower_bound=16)
_OUT_DIR = flags.DEFINE_string(
    "out_dir", None, "compress and decompress: write one output per input into this "
    "existing directory (named after the input); every argument is then an input. The "
    "same as giving the directory as the last argument.")
common_flags.declare_key_flags(__name__, "model", "overwrite", "refine_steps")

LITE_MANIFEST = "manifest.json"


class _ModelError(errors.TflicError):
  """The model cannot be loaded: every remaining file would fail the same way."""


def _quiet_on_broken_pipe(main):
  """A main that stops quietly when the reader of its stdout goes away (`| head`)."""

  @functools.wraps(main)
  def run(argv):
    try:
      status = main(argv)
      sys.stdout.flush()  # a closed pipe shows here at the latest, not at exit
      return status
    except BrokenPipeError:
      return image_io.silence_stdout()

  return run


def _bundled(name):
  return os.path.join(tflic.BUNDLED_DIR, name)


def _lite_dir():
  """The LiteRT export to run on the fast path, or None if --model has none."""
  path = _MODEL.value or _bundled("lite")
  return path if os.path.isfile(os.path.join(path, LITE_MANIFEST)) else None


def runtime(command, sizes=()):
  """"lite" or "tf": where `command` (compress or decompress) runs with these flags, for
  images of these (height, width) sizes; TflicError for a combination that cannot run."""
  lite_dir = _lite_dir()
  refine = command == "compress" and _REFINE_STEPS.value > 0
  if _RUNTIME.value == "tf":
    if _MODEL.value and lite_dir:
      raise errors.TflicError(f"--model={_MODEL.value} is a LiteRT export; --runtime=tf "
                              "needs a SavedModel or a training directory")
    return "tf"
  if lite_dir is None:
    if _RUNTIME.value == "lite":
      raise errors.TflicError(f"--runtime=lite needs a LiteRT export (`python -m "
                              f"export.tflite`); {_MODEL.value or 'this installation'} has "
                              "none")
    return "tf"
  if refine:
    if _RUNTIME.value == "lite" or _MODEL.value:
      raise errors.TflicError("latent refinement (--refine_steps) needs TensorFlow: pass "
                              "--runtime=tf with a SavedModel or training directory")
    return "tf"  # the bundled SavedModel beside the LiteRT files
  if command == "compress" and not all(_one_tile(lite_dir, *size) for size in sizes):
    # The LiteRT analysis runs in one piece (its h_a needs the whole latent); the
    # SavedModel analyses larger images in tiles.
    if _RUNTIME.value == "lite" or _MODEL.value:
      raise errors.TflicError("an image larger than one tile (--tile_memory_mib) is "
                              "compressed in tiles by the SavedModel: pass --runtime=tf with "
                              "a SavedModel or training directory")
    return "tf"
  return "lite"


def _tile_budget():
  # Flags are unparsed when a library caller (not the command) loads a model.
  return (_TILE_MEMORY.value if flags.FLAGS.is_parsed() else _TILE_MEMORY.default) << 20


@functools.cache
def _lite_model_config(lite_dir):
  """The model config in a LiteRT export's manifest, read once per export."""
  from tflic.lite import decoder  # pylint: disable=g-import-not-at-top
  return decoder.read_manifest(lite_dir)["config"]["model"]


def _one_tile(lite_dir, height, width):
  """Whether an image of this size is analysed in one piece (`tflic.codec.tiling.plan`)."""
  return len(tiling.plan(height, width, _lite_model_config(lite_dir), _tile_budget())) == 1


def needs_tensorflow(command, paths=()):
  """Whether `command` with the parsed flags and positional `paths` runs in TensorFlow
  (tflic.cli imports it first, then, and only then). Image sizes come from the files'
  headers; unreadable inputs are left to the command's own errors."""
  if command not in ("compress", "decompress"):
    return False
  inputs = paths if _OUT_DIR.value is not None else paths[:-1]
  sizes = [image_io.image_size(path) for path in inputs] if command == "compress" else []
  return runtime(command, [size for size in sizes if size]) == "tf"


@_quiet_on_broken_pipe
def compress_main(argv):
  """`tflic compress IN [IN ...] OUT.tflic|OUTDIR` (or `IN [IN ...] --out_dir=OUTDIR`);
  returns the exit status."""
  given = [f"--{name}" for name in ("quality", "target_bpp", "target_bytes")
           if flags.FLAGS[name].present]
  if len(given) > 1:
    raise errors.TflicError(f"{' and '.join(given)} exclude each other: give one")
  return _convert_all(argv, "IN.png [IN2 ...] OUT.tflic|OUTDIR", ".tflic", _compress_one)


@_quiet_on_broken_pipe
def decompress_main(argv):
  """`tflic decompress IN.tflic [IN2 ...] OUT.png|OUTDIR` (or `... --out_dir=OUTDIR`);
  returns the exit status."""
  return _convert_all(argv, "IN.tflic [IN2 ...] OUT.png|OUTDIR", ".png", _decompress_one)


@_quiet_on_broken_pipe
def info_main(argv):
  """`tflic info IN.tflic [...]`: prints each file's header; returns the exit status."""
  program, paths = argv[0], argv[1:]
  if _OUT_DIR.value is not None:
    raise errors.TflicError("--out_dir is for compress and decompress; info writes no files")
  if not paths:
    raise errors.TflicError("expected IN.tflic [IN2.tflic ...]")
  failed = 0
  for i, path in enumerate(paths):
    try:
      data, header = _read_tflic(path)
    except errors.TflicError as e:
      _report(program, str(e))
      failed += 1
      continue
    print(("\n" if i else "") + image_io.printable(_describe(path, header, len(data))))
  return 2 if failed else 0


def _describe(path, header, total_bytes):
  """The lines `tflic info` prints for one file."""
  pixels = header.height * header.width
  return "\n".join([
      f"{path}:",
      f"  version:     {header.version}",
      f"  mode:        {header.mode}",
      f"  fingerprint: {header.fingerprint.hex()}",
      f"  size:        {header.width}x{header.height}",
      f"  quality:     {header.quality:.4f}",
      f"  z stream:    {header.z_bytes} bytes",
      f"  y stream:    {header.y_bytes} bytes",
      f"  latents:     check {header.latent_check:016x}",
      f"  total:       {total_bytes} bytes",
      f"  bpp:         {8 * total_bytes / pixels:.4f}",
  ])


def _convert_all(argv, usage, out_suffix, convert_one):
  """Runs convert_one(src, dst) on each input; one line per file, errors included.

  Ctrl-C and SIGTERM stop the run at once, even inside a long TensorFlow call, with one
  line and no partial output (image_io.interruptible).
  """
  program = argv[0]
  jobs = image_io.plan_outputs(argv[1:], usage, out_suffix, _OUT_DIR.value)
  failed = 0
  done = set()
  # The bar goes to stderr, and only when it is a terminal: a log file gets no \r noise.
  progress = tqdm.tqdm(jobs, desc=program, unit="file", disable=len(jobs) < 2 or None)

  def report_interrupt(message):
    if not progress.disable:
      sys.stderr.write("\n")  # after the bar, as when it closes
    print(message, file=sys.stderr)

  with image_io.interruptible(program, report_interrupt):
    for src, dst in progress:
      try:
        if os.path.abspath(dst) in done:
          raise errors.TflicError(f"{src}: output {dst} was written by an earlier input")
        # One bar: with several files the current one's stage goes beside theirs.
        with progress_lib.Bar(src, files=progress if len(jobs) > 1 else None) as report:
          line = convert_one(src, dst, report)
        done.add(os.path.abspath(dst))
        tqdm.tqdm.write(image_io.printable(line), file=sys.stdout)
      except _ModelError:
        raise
      except errors.TflicError as e:
        failed += 1
        _report(program, str(e))
      except BrokenPipeError:  # stdout's reader is gone: stop (_quiet_on_broken_pipe)
        raise
      except OSError as e:  # a file system failure the steps did not name (a safety net)
        failed += 1
        _report(program, f"{src}: {image_io.describe_os_error(e)}")
      except MemoryError:
        failed += 1
        _report(program, f"{src}: out of memory")
  return 2 if failed else 0


def _compress_one(src, dst, report=None):
  """Compresses one image file; returns the line to print. report: a progress callback
  (`tflic.codec.progress`)."""
  image_io.check_output(dst, _OVERWRITE.value)  # before the slow part
  image = image_io.read_image(src, _MAX_PIXELS.value)
  height, width = image.shape[:2]
  if min(height, width) < bitstream.MIN_SIDE:
    raise errors.TflicError(f"{src}: image is {width}x{height}, smaller than the minimum "
                            f"of {bitstream.MIN_SIDE} pixels per side")
  if runtime("compress", [(height, width)]) == "lite":
    encoder = _load_lite("encoder", _lite_dir())
    start = time.perf_counter()
    compress = functools.partial(encoder.compress, image, max_pixels=_MAX_PIXELS.value,
                                 progress=report)
  else:
    model = _load_model(_MODEL.value)
    start = time.perf_counter()
    compress = functools.partial(model.compress, image, refine_steps=_REFINE_STEPS.value,
                                 progress=report)
  budget = _budget_bytes(height, width)
  try:
    if budget is None:
      data = compress(_QUALITY.value)
    else:
      quality, data = rate_control.fit_to_budget(compress, budget)
  except errors.TflicError as e:
    raise _about(src, e) from None
  image_io.atomic_write(dst, data, _OVERWRITE.value)
  size = os.path.getsize(dst)  # the bpp users see is that of the file actually written
  line = _summary(src, dst, width, height, size, time.perf_counter() - start)
  return line if budget is None else f"{line}, quality {quality:.4f}"


def _budget_bytes(height, width):
  """The size budget of --target_bytes or --target_bpp for this image, or None."""
  if _TARGET_BYTES.value is not None:
    return _TARGET_BYTES.value
  if _TARGET_BPP.value is not None:
    return int(_TARGET_BPP.value * height * width / 8)
  return None


def _decompress_one(src, dst, report=None):
  """Decompresses one .tflic file; returns the line to print. report: as in
  `_compress_one`."""
  image_io.check_output(dst, _OVERWRITE.value)
  data, header = _read_tflic(src)  # clear errors before any TensorFlow work
  if header.height * header.width > _MAX_PIXELS.value:
    raise errors.TflicError(
        f"{src}: image would be {header.width}x{header.height} = "
        f"{header.height * header.width} pixels, more than the limit of "
        f"{_MAX_PIXELS.value} (see --max_pixels)")
  lite = runtime("decompress") == "lite"
  try:
    if lite:  # the decoder checks the stream-length rule before any allocation
      model = _load_lite("decoder", _lite_dir())
      start = time.perf_counter()
      image = model.decompress(data, max_pixels=_MAX_PIXELS.value, progress=report)
    else:  # the stream-length rule too, before the model is loaded
      bitstream.check_declared_size_for_export(_MODEL.value or _bundled("model"), header,
                                               _MAX_PIXELS.value)
      model = _load_model(_MODEL.value)
      start = time.perf_counter()
      image = model.decompress(data, progress=report)
  except _ModelError:
    raise
  except errors.TflicError as e:
    raise _about(src, e) from None
  image_io.write_png(dst, image, _OVERWRITE.value)
  height, width = image.shape[:2]
  return _summary(src, dst, width, height, len(data), time.perf_counter() - start)


def _read_tflic(path):
  """(file bytes, Header) of a .tflic file; TflicError naming the file if invalid."""
  data = image_io.read_bytes(path)
  try:
    header, _, _ = bitstream.unpack(data)
  except errors.TflicError as e:
    raise _about(path, e) from None
  return data, header


def _summary(src, dst, width, height, tflic_bytes, seconds):
  """One result line; bytes and bpp are those of the .tflic file."""
  bpp = 8 * tflic_bytes / (height * width)
  return (f"{src} -> {dst}: {width}x{height}, {tflic_bytes} bytes, {bpp:.4f} bpp, "
          f"{seconds:.2f} s")


def _codec_module():
  """tflic.codec.tf_codec, imported on first use: it imports TensorFlow, which only the
  SavedModel path needs."""
  # tflic.cli imports TensorFlow before absl's app.run when `needs_tensorflow`.
  from tflic.codec import tf_codec  # pylint: disable=g-import-not-at-top
  return tf_codec


@functools.cache
def _load_model(path):
  """The Codec for --model (None: the bundled one), loaded once, on first use."""
  tf_codec = _codec_module()
  try:
    return tf_codec.load(path or tf_codec.default_model_path(), tile_budget=_tile_budget())
  except errors.TflicError as e:
    raise _ModelError(str(e)) from None


# Free the loaded model while TensorFlow is still whole: left to the interpreter's teardown,
# its functions' destructors run after TensorFlow's modules are gone and print "Exception
# ignored in: AtomicFunction.__del__" tracebacks.
atexit.register(_load_model.cache_clear)


@functools.cache
def _load_lite(kind, model_dir):
  """The fast path's Encoder or Decoder (`kind`) of a LiteRT export, loaded once."""
  from tflic.lite import decoder  # pylint: disable=g-import-not-at-top
  from tflic.lite import encoder  # pylint: disable=g-import-not-at-top
  try:
    if kind == "encoder":
      return encoder.Encoder(model_dir)
    return decoder.Decoder(model_dir, tile_budget=_tile_budget())
  except errors.TflicError as e:
    raise _ModelError(str(e)) from None


def _about(path, error):
  """`error`'s message prefixed with the file it is about."""
  return errors.TflicError(f"{path}: {error}")


def _report(program, message):
  tqdm.tqdm.write(image_io.printable(f"{program}: error: {message}"), file=sys.stderr)
