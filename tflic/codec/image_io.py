"""Image and file I/O for the command line: 8-bit RGB arrays in, atomic writes out.

Every failure a user can cause (a missing or unreadable file, something that is not an
image, an image too large to decode safely, an output that cannot be written) raises
`tflic.errors.TflicError` with a one-line message. Writes go to a temporary file in the
output's directory that is renamed over the output only once complete, so a failed or
interrupted run never leaves a partial output behind: the temporary file is removed on
any error, on Ctrl-C and SIGTERM (see `interruptible`), and one that a killed writer left
behind (kill -9, power loss) is removed by the next write of the same output.
"""

import contextlib
import errno
import io
import logging
import os
import re
import secrets
import signal
import stat
import sys
import threading

import numpy as np
from PIL import Image
from PIL import ImageCms
from PIL import ImageOps

from tflic import errors

# Standard logging (absl's handler prints it in `tflic`): the TF-free decoder (tflic.lite)
# uses this module without absl.
_LOG = logging.getLogger(__name__)

# With the transforms in tiles (tflic/codec/tiling.py) only the image, the latents and the
# entropy coder grow with the image: compress and decompress peaked at 2.1 and 3.4 GiB
# at 24 and 100 MP (benchmarks/memory.py, reports/memory_large/), so 400 MP (a 25000 x
# 16000 panorama) needs about 8 GiB, a 16 GiB laptop's share. The format allows 65535
# pixels a side; the stream-length rule still bounds what a small file can declare.
DEFAULT_MAX_PIXELS = 400_000_000
# Only formats we mean to accept: Pillow's other plugins (EPS runs Ghostscript, for
# one) are more attack surface than a codec's input needs.
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF")
_EXIF_ORIENTATION = 0x0112
_SRGB = ImageCms.createProfile("sRGB")
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

  Grayscale, palette, alpha and 16-bit images are converted, with a one-line warning;
  so are pixels in a colour space other than sRGB (an embedded ICC profile), to sRGB.
  A camera's EXIF orientation is applied: the pixels are upright, as viewers show them.

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
      image = _upright(image)
      image = _to_srgb(image, path)
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


def image_size(path):
  """(height, width) of an image file as `read_image` returns it (EXIF orientation
  applied), from its header alone; None if it cannot be read (`read_image` says why)."""
  try:
    with _pillow_size_limit_disabled():
      with Image.open(os.fspath(path), formats=FORMATS) as image:
        width, height = image.size
        turned = image.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
  except (OSError, SyntaxError, ValueError, EOFError, Image.UnidentifiedImageError):
    return None
  return (width, height) if turned else (height, width)


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


def _upright(image):
  """The image turned as its EXIF orientation says (cameras store the sensor's rows and
  a tag; viewers turn them), without the tag; the image itself if it has none."""
  try:
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
  except (ValueError, OSError, SyntaxError):  # an unreadable EXIF block: as stored
    return image
  if orientation in (None, 1) or orientation not in range(2, 9):
    return image
  return ImageOps.exif_transpose(image)


def _to_srgb(image, path):
  """The image in sRGB if it embeds an ICC profile of another RGB or CMYK colour space
  (with a one-line note); as it is otherwise, or with a note if its profile is unusable."""
  icc = image.info.get("icc_profile")
  if not icc:
    return image
  try:
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    name = (ImageCms.getProfileDescription(profile) or "unnamed").strip()
  except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
    _LOG.warning("%s: unreadable ICC profile ignored (pixels taken as sRGB)", path)
    return image
  if "srgb" in name.lower().replace(" ", ""):
    return image
  if image.mode not in ("RGB", "CMYK"):
    _LOG.warning("%s: ICC profile %r of a %s image ignored (pixels taken as sRGB)", path,
                 name, _DESCRIPTIONS.get(image.mode, f"mode {image.mode}"))
    return image
  try:
    converted = ImageCms.profileToProfile(image, profile, _SRGB, outputMode="RGB")
  except (ImageCms.PyCMSError, OSError, ValueError) as e:
    _LOG.warning("%s: ICC profile %r ignored, pixels taken as sRGB (%s)", path, name,
                 _reason(e))
    return image
  _LOG.warning("%s: converted from its ICC profile %r to sRGB", path, name)
  return converted


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


def plan_outputs(args, usage, out_suffix, out_dir=None):
  """(input, output) pairs from a command's positional arguments `IN [IN2 ...] OUT|OUTDIR`.

  An existing directory as the last argument takes one output per input, named after it
  with `out_suffix`; TflicError if the arguments do not fit `usage`. With `out_dir` (the
  commands' --out_dir) every argument is an input, and the outputs go there.
  """
  if out_dir is not None:
    return _plan_outputs_in(args, usage, out_suffix, out_dir)
  if len(args) < 2:
    raise errors.TflicError(f"expected {usage}, got {len(args)} argument(s)")
  *inputs, output = args
  if os.path.isdir(output):
    return [(src, os.path.join(output, _stem(src) + out_suffix)) for src in inputs]
  if len(inputs) > 1 or output.endswith(("/", os.sep)):
    if os.path.lexists(output.rstrip("/" + os.sep) or output):
      raise errors.TflicError(f"output directory {output} is not a directory")
    raise errors.TflicError(f"output directory {output} does not exist")
  return [(inputs[0], output)]


def _plan_outputs_in(inputs, usage, out_suffix, out_dir):
  """plan_outputs with --out_dir=out_dir: every argument an input."""
  if not out_dir:
    raise errors.TflicError("--out_dir is empty: give a directory")
  if not inputs:
    raise errors.TflicError(f"expected {usage.split(' OUT')[0]} with --out_dir, got no "
                            "input")
  last = inputs[-1]
  # The other form's output given as well (`a.png b.png outdir/ --out_dir=d`): say so,
  # rather than fail on it as an unreadable input after the others are done.
  if os.path.isdir(last) or last.endswith(("/", os.sep)):
    raise errors.TflicError(f"--out_dir={out_dir} and the output directory {last} exclude "
                            "each other: give one")
  if last.lower().endswith(out_suffix):
    raise errors.TflicError(f"with --out_dir every argument is an input, but {last} looks "
                            "like an output: give --out_dir or an output, not both")
  if not os.path.isdir(out_dir):
    if os.path.lexists(out_dir):
      raise errors.TflicError(f"--out_dir={out_dir} is not a directory")
    raise errors.TflicError(f"output directory {out_dir} (--out_dir) does not exist")
  return [(src, os.path.join(out_dir, _stem(src) + out_suffix)) for src in inputs]


def _stem(path):
  return os.path.splitext(os.path.basename(os.path.normpath(path)))[0]


def check_output(path, overwrite=False):
  """Raises TflicError unless `path` can be written; for commands, before their slow part.

  Beyond `path` not being a directory, not existing (unless overwrite) and having an
  existing parent directory, a file is created in that directory and removed again: a
  check that every cause (permissions, ACLs, read-only or immutable directories, quotas,
  root squashed by NFS) passes through, where os.access misses some.
  """
  path = os.fspath(path)
  _check_target(path, overwrite)
  directory, name = os.path.split(os.path.abspath(path))
  probe = _temp_path(directory, name)  # named as a temp file: if we are killed, cleaned up
  try:
    _create_temp(probe).close()
  except OSError as e:
    raise errors.TflicError(f"cannot write {path}: {_reason(e)}") from None
  finally:
    _discard_temp(probe)


def _check_target(path, overwrite):
  """The checks of check_output that need no file created."""
  directory = os.path.dirname(os.path.abspath(path))
  try:
    mode = os.stat(directory).st_mode
  except OSError as e:
    if e.errno == errno.ENOENT:
      raise errors.TflicError(
          f"cannot write {path}: directory {directory} does not exist") from None
    raise errors.TflicError(f"cannot write {path}: {_reason(e)}") from None
  if not stat.S_ISDIR(mode):
    raise errors.TflicError(f"cannot write {path}: {directory} is not a directory")
  try:
    os.lstat(path)
  except FileNotFoundError:
    return
  except OSError as e:  # e.g. a name too long: found now rather than at the rename
    raise errors.TflicError(f"cannot write {path}: {_reason(e)}") from None
  if os.path.isdir(path):
    raise errors.TflicError(f"cannot write {path}: is a directory")
  if not overwrite:
    raise errors.TflicError(f"{path} exists; pass --overwrite to replace it")
  with contextlib.suppress(OSError):  # a dangling symbolic link is replaced
    if not stat.S_ISREG(os.stat(path).st_mode):  # a device, FIFO or socket
      raise errors.TflicError(f"cannot write {path}: not a regular file")


def atomic_write(path, data, overwrite=False):
  """Writes bytes to `path` all at once: via a temporary file that replaces it at the end.

  The temporary file, `.NAME.PID.RANDOM.tmp` beside `path`, names the writing process, so
  that one left behind by a killed writer is recognised, and removed, by the next write of
  `path` (`remove_stale_temps`).

  Args:
    path: the output file.
    data: the bytes to write.
    overwrite: replace an existing file instead of raising TflicError.

  Raises:
    TflicError: the output exists (and not overwrite) or cannot be written. The temporary
      file is removed on any failure, including KeyboardInterrupt.
  """
  path = os.fspath(path)
  _check_target(path, overwrite)
  directory, name = os.path.split(os.path.abspath(path))
  remove_stale_temps(path)
  # Same directory, so that os.replace is a rename within one filesystem.
  temp = _temp_path(directory, name)
  try:
    with _create_temp(temp) as f:
      f.write(data)
      f.flush()
      # Without this a crash soon after the rename can leave an empty file.
      os.fsync(f.fileno())
    with _PENDING_LOCK:  # not while an interrupt is removing the temporary files
      os.replace(temp, path)
      _PENDING.discard(temp)
  except OSError as e:
    _discard_temp(temp)
    raise errors.TflicError(f"cannot write {path}: {_reason(e)}") from None
  except BaseException:
    _discard_temp(temp)
    raise


# Temporary files: `.NAME.PID.RANDOM.tmp`. NAME is cut to keep the whole within the usual
# 255-byte limit of a file name.
_NAME_BYTES = 200
_TEMP_TAIL = re.compile(r"([0-9]+)\.[0-9a-f]{8}\.tmp")

# This process's temporary files not yet renamed (or removed): what an interrupt removes.
# Created and renamed only under the lock, which an interrupt takes for good (see
# `_abandon_writes`), so that none is created or renamed after it.
_PENDING = set()
_PENDING_LOCK = threading.Lock()


def _temp_prefix(name):
  """`.NAME.`, the start of the temporary files' names for an output called `name`."""
  name = name[:_NAME_BYTES]
  while len(os.fsencode(name)) > _NAME_BYTES:
    name = name[:-1]
  return f".{name}."


def _temp_path(directory, name):
  return os.path.join(directory,
                      f"{_temp_prefix(name)}{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _create_temp(temp):
  """Creates a temporary file (which must not exist) and registers it; its open file."""
  with _PENDING_LOCK:
    f = open(temp, "xb")  # pylint: disable=consider-using-with
    _PENDING.add(temp)
  return f


def _discard_temp(temp):
  with _PENDING_LOCK:
    _remove_quietly(temp)
    _PENDING.discard(temp)


def remove_stale_temps(path):
  """Removes the temporary files of `path` whose writer is no longer running.

  They are what `atomic_write` leaves when its process is killed (kill -9, OOM killer,
  power loss) between creating its temporary file and renaming it. A file whose process
  is alive (or whose process id is now another live process's) is left alone.

  A process id is only meaningful on this machine, in this pid namespace: on a directory
  that other machines or containers write the same output in at the same moment, this
  may remove another writer's temporary file, whose rename then fails with a one-line
  error (no output is ever partial).

  Returns:
    The paths removed.
  """
  directory, name = os.path.split(os.path.abspath(os.fspath(path)))
  prefix = _temp_prefix(name)
  try:
    with os.scandir(directory) as entries:
      candidates = [entry.name for entry in entries if entry.name.startswith(prefix)]
  except OSError:
    return []  # the write itself will say what is wrong with the directory
  removed = []
  for candidate in candidates:
    match = _TEMP_TAIL.fullmatch(candidate, len(prefix))
    if match and not _process_alive(int(match[1])):
      stale = os.path.join(directory, candidate)
      with contextlib.suppress(OSError):
        os.remove(stale)
        removed.append(stale)
  if removed:
    _LOG.info("removed %d stale temporary file(s) of %s", len(removed), path)
  return removed


def _process_alive(pid):
  """False only if no process `pid` exists; True when in doubt."""
  if os.name != "posix" or pid <= 0:  # os.kill(0, 0) would signal our process group
    return True
  if pid == os.getpid():
    return True
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except (OSError, OverflowError):  # EPERM: alive, another user's
    return True
  return True


# Signal number -> (word reported, exit status 128 + signal number, as a shell shows).
_STOP_SIGNALS = {signal.SIGINT: ("interrupted", 130), signal.SIGTERM: ("terminated", 143)}


@contextlib.contextmanager
def interruptible(program, report=None):
  """Within: Ctrl-C (SIGINT) and SIGTERM end the process promptly, with no partial output.

  Python runs signal handlers, and so raises KeyboardInterrupt, only in the main thread
  between two bytecodes: while that thread is in one long TensorFlow (or LiteRT) call, a
  Ctrl-C waits for the call to end. Here the C-level handler wakes a watcher thread
  instead (`signal.set_wakeup_fd`), which removes this process's temporary files (and
  keeps any more from being created or renamed into place), reports one line, e.g.
  `tflic compress: interrupted`, flushes stdout and stderr and exits with 130 (143 for
  SIGTERM) by os._exit: the busy call cannot be cancelled. Outputs already renamed into
  place are complete and stay. Leaving the block restores the previous handlers.

  Signal handlers can only be set in the main thread: elsewhere (and on Windows) this
  does nothing.

  Args:
    program: what the line starts with, e.g. "tflic compress".
    report: prints the line (default: to stderr).
  """
  if os.name != "posix" or threading.current_thread() is not threading.main_thread():
    yield
    return
  read_fd, write_fd = os.pipe()
  os.set_blocking(write_fd, False)  # as set_wakeup_fd requires
  lock = threading.Lock()  # taken for good by the watcher once it acts
  stopping = []
  previous = {}

  def watch():
    while True:
      try:
        data = os.read(read_fd, 64)
      except OSError:
        return
      if not data or 0 in data:  # closed, or the block's end
        return
      signum = next((s for s in data if s in _STOP_SIGNALS), None)
      if signum is None:
        continue
      lock.acquire()  # pylint: disable=consider-using-with
      if stopping:
        lock.release()
        return
      word, status = _STOP_SIGNALS[signum]
      try:
        _abandon_writes()
        (report or _print_to_stderr)(f"{program}: {word}")
        for stream in (sys.stdout, sys.stderr):
          with contextlib.suppress(Exception):
            stream.flush()
      finally:
        os._exit(status)  # pylint: disable=protected-access

  watcher = threading.Thread(target=watch, name="tflic-interrupt", daemon=True)

  def handler(signum, frame):
    # Runs in the main thread once it is back in Python: the watcher has acted by then,
    # unless the block is ending (or the watcher is gone): then, as before the block.
    if stopping or not watcher.is_alive():
      _call_handler(previous[signum], signum, frame)

  old_wakeup_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
  try:
    watcher.start()
    for signum in _STOP_SIGNALS:
      # Left alone: a signal ignored (as SIGINT is for a background job of a script), and
      # one whose handler was set outside Python (None), which could not be restored.
      if signal.getsignal(signum) not in (None, signal.SIG_IGN):
        previous[signum] = signal.signal(signum, handler)
    yield
  finally:
    with lock:  # blocks forever once the watcher acts: the process is ending
      stopping.append(True)
    for signum, old in previous.items():
      signal.signal(signum, old)
    signal.set_wakeup_fd(old_wakeup_fd)
    with contextlib.suppress(OSError):
      os.write(write_fd, b"\0")
    if watcher.ident is not None:  # started
      watcher.join()
    os.close(read_fd)
    os.close(write_fd)


def _call_handler(handler, signum, frame):
  """Does what a signal handler returned by signal.signal would have done."""
  if callable(handler):
    handler(signum, frame)
  elif handler == signal.SIG_DFL:
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


def _abandon_writes():
  """Removes this process's temporary files; none is created or renamed after this."""
  _PENDING_LOCK.acquire(timeout=5)  # pylint: disable=consider-using-with
  for temp in list(_PENDING):
    _remove_quietly(temp)


def _print_to_stderr(message):
  print(message, file=sys.stderr)


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


def printable(text):
  """`text` with any undecodable bytes of file names (surrogate escapes) shown as \\xNN,
  which printing to a strict UTF-8 stdout would otherwise fail on."""
  encoding = sys.getfilesystemencoding()
  return text.encode(encoding, "surrogateescape").decode(encoding, "backslashreplace")


def silence_stdout():
  """Points stdout at /dev/null once its reader is gone (`tflic info ... | head`), so that
  nothing more fails on it, at exit included; returns 141, the exit status of a process
  that SIGPIPE ended (as `cat` ends there)."""
  with contextlib.suppress(OSError, ValueError):
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
  return 141


def describe_os_error(error):
  """One line for an OSError: its reason, and the file it names, if any."""
  reason = _reason(error)
  return f"{error.filename}: {reason}" if error.filename is not None else reason


def _reason(error):
  """A short, one-line reason for an OSError or a Pillow error."""
  if isinstance(error, OSError) and error.strerror:
    return error.strerror
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__
