r"""Writes a long run's resume point: the moving average of its weights, model only.

  python tools/resume_point.py --workdir=runs/medium_hifi --out=models/medium_hifi \
      [--source=weights] [--dtype=float32]

The output is a training directory (config.json and one model-only checkpoint, float16 by
default, no optimizer state) that `python -m tflic.train --init_from=OUT` and `tools/long_run.sh`
start from when the run's own checkpoints are gone (a new machine): training resumes from
the averaged weights (or, with --source=weights, the weights themselves: early in a
run the average still carries much of the initialisation, so the crop check decides) at
the run's step, with a fresh optimizer (and its warm-up). It
replaces OUT as a whole (staged beside it, then swapped), so OUT is never left half
written. About 2 bytes per parameter in float16 (7 MB for `medium`; each replacement
stays in git's history), 4 in float32; training and `tflic` read either
(`checkpoint.float32_prefix`).
"""

import os
import shutil
import sys

from absl import app
from absl import flags

from tflic import errors
from tflic.model import checkpoint

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's training directory.",
                               required=True)
_OUT = flags.DEFINE_string("out", None, "The resume point's directory (replaced).",
                           required=True)
_SOURCE = flags.DEFINE_enum("source", "average", ["average", "weights"],
                            "What to keep: the weights' moving average, or the weights.")
_DTYPE = flags.DEFINE_enum("dtype", "float16", ["float16", "float32"],
                           "How the floats are stored.")


def write(workdir, out, average=True, dtype="float16"):
  """Writes the average (or the weights) of `workdir`'s latest checkpoint to `out`, its
  floats in `dtype`; returns (step, bytes)."""
  cfg, model, step = checkpoint.restore_model(workdir, average=average)
  staged = out.rstrip("/") + ".staged"
  shutil.rmtree(staged, ignore_errors=True)
  checkpoint.save_model(staged, cfg, model, step, dtype)
  old = out.rstrip("/") + ".old"
  shutil.rmtree(old, ignore_errors=True)
  if os.path.exists(out):
    os.rename(out, old)
  os.rename(staged, out)
  shutil.rmtree(old, ignore_errors=True)
  size = sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(out) for name in names)
  return step, size


def main(argv):
  del argv
  try:
    step, size = write(_WORKDIR.value, _OUT.value, _SOURCE.value == "average",
                       _DTYPE.value)
  except errors.TflicError as e:
    print(f"resume_point: error: {e}", file=sys.stderr)
    return 2
  print(f"{_OUT.value}: the {_SOURCE.value} of {_WORKDIR.value} at step {step}, "
        f"{_DTYPE.value}, {size / 1e6:.1f} MB")
  return 0


if __name__ == "__main__":
  app.run(main)
