r"""Exports a trained model as a SavedModel codec.

  python -m tflic.export --checkpoint=runs/small --out=exported/small

The SavedModel has two signatures, `compress(image: uint8[H, W, 3], quality: float32[])
-> string[]` and `decompress(bitstream: string[]) -> uint8[H, W, 3]`, with
tensorflow-compression's range coder inside. It loads in any process that has run
`import tensorflow_compression` (which registers the coder ops); no tflic code is needed.
It is also what `tflic compress --model=...` takes.
"""


from absl import app
from absl import flags

from tflic import cli
from tflic import common_flags
from tflic import errors
from tflic import savedmodel

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Training directory (--workdir).")
_OUT = common_flags.OUT  # the SavedModel directory
_OVERWRITE = common_flags.OVERWRITE
common_flags.declare_key_flags(__name__, "out", "overwrite")


def main(argv):
  if len(argv) > 1:
    raise errors.TflicError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _CHECKPOINT.value or not _OUT.value:
    raise errors.TflicError("--checkpoint and --out are required")
  out, step = savedmodel.export_checkpoint(_CHECKPOINT.value, _OUT.value, _OVERWRITE.value)
  print(f"exported step {step} of {_CHECKPOINT.value} to {out}")


if __name__ == "__main__":
  app.run(cli.guarded(main, "export"))
