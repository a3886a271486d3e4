"""`tflic-lite`: decodes .tflic files without TensorFlow (LiteRT, numpy, the C coder).

  tflic-lite decompress --model=DIR IN.tflic OUT.png
  tflic-lite decompress --model=DIR a.tflic b.tflic OUTDIR/    # OUTDIR/a.png, OUTDIR/b.png

DIR is what `python -m export.tflite --model=MODEL --out=DIR` writes. Errors are the
one-line messages of `tflic decompress`; with several inputs a bad one is reported and
the rest are still decoded, and the exit status is 2 if any failed.
"""

import argparse
import sys
import time

from tflic.codec import bitstream
from tflic.codec import image_io
from tflic import errors

_USAGE = "IN.tflic [IN2 ...] OUT.png|OUTDIR"


class _ModelError(errors.TflicError):
  """The model cannot be loaded: every remaining file would fail the same way."""


def _parser():
  parser = argparse.ArgumentParser(
      prog="tflic-lite", description="Decode .tflic files without TensorFlow.")
  commands = parser.add_subparsers(dest="command", required=True)
  decompress = commands.add_parser("decompress", help="decode .tflic files into PNG")
  decompress.add_argument("--model", required=True,
                          help="a LiteRT export (python -m export.tflite --out=DIR)")
  decompress.add_argument("--overwrite", action="store_true",
                          help="replace existing output files")
  decompress.add_argument("--max_pixels", type=int, default=image_io.DEFAULT_MAX_PIXELS,
                          help="refuse files that declare more pixels than this")
  decompress.add_argument("--threads", type=int, default=None,
                          help="LiteRT threads for the synthesis (default: this process's CPUs; "
                          "the pixels do not depend on it)")
  decompress.add_argument("paths", nargs="+", metavar="PATH", help=_USAGE)
  return parser


def _decompress_one(decoder, args, src, dst):
  """Decodes one file; returns the line to print."""
  image_io.check_output(dst, args.overwrite)
  data = image_io.read_bytes(src)
  header, _, _ = bitstream.unpack(data)
  if header.height * header.width > args.max_pixels:
    raise errors.TflicError(
        f"image would be {header.width}x{header.height} = {header.height * header.width} "
        f"pixels, more than the limit of {args.max_pixels} (see --max_pixels)")
  start = time.perf_counter()
  image = decoder().decompress(data, max_pixels=args.max_pixels)
  image_io.write_png(dst, image, args.overwrite)
  seconds = time.perf_counter() - start
  bpp = 8 * len(data) / (header.height * header.width)
  return (f"{src} -> {dst}: {header.width}x{header.height}, {len(data)} bytes, "
          f"{bpp:.4f} bpp, {seconds:.2f} s")


def _run(args, program):
  from tflic.lite import decoder as decoder_lib  # pylint: disable=g-import-not-at-top
  jobs = image_io.plan_outputs(args.paths, _USAGE, ".png")
  loaded = []

  def decoder():
    # Loaded on first use, so that argument errors come before the slow part.
    if not loaded:
      try:
        loaded.append(decoder_lib.Decoder(args.model, num_threads=args.threads))
      except errors.TflicError as e:
        raise _ModelError(str(e)) from None
    return loaded[0]

  failed = 0
  # Ctrl-C and SIGTERM stop at once, even inside LiteRT, with one line and no partial
  # output (image_io.interruptible).
  with image_io.interruptible(program):
    for src, dst in jobs:
      try:
        print(image_io.printable(_decompress_one(decoder, args, src, dst)), flush=True)
        continue
      except _ModelError:
        raise
      except errors.TflicError as e:
        message = str(e)
      except BrokenPipeError:  # stdout's reader is gone: stop (see main)
        raise
      except OSError as e:  # a file system failure the steps did not name (a safety net)
        message = image_io.describe_os_error(e)
      except MemoryError:
        message = "out of memory"
      failed += 1
      print(image_io.printable(f"{program}: error: {src}: {message}"), file=sys.stderr,
            flush=True)
  return 2 if failed else 0


def main(argv=None):
  """Entry point of the `tflic-lite` console script."""
  args = _parser().parse_args(argv)
  program = f"tflic-lite {args.command}"
  try:
    status = _run(args, program)
    sys.stdout.flush()  # a closed pipe shows here at the latest, not at exit
    return status
  except BrokenPipeError:  # `tflic-lite decompress ... | head`: stop quietly
    return image_io.silence_stdout()
  except errors.TflicError as e:
    print(f"{program}: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print(f"{program}: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
