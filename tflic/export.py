r"""Exports a trained model as a SavedModel codec.

  python -m tflic.export --checkpoint=runs/small --out=exported/small
  python -m tflic.export --checkpoint=exported/old --out=exported/new  # re-export
  python -m tflic.export --checkpoint=runs/small --average --out=exported/avg  # the average

The SavedModel has the signatures `compress(image: uint8[H, W, 3], quality: float32[])
-> string[]`, `compress_refined` (the same, with latent refinement) and
`decompress(bitstream: string[]) -> uint8[H, W, 3]`, with tflic's range coder ops inside
(`tflic/codec/rangecoder/_tf_ops.cc`). It loads in any process that has run
`tf.load_op_library` on `tflic/codec/rangecoder/_tf_ops.so` (which `pip install -e .` builds;
importing `tflic.codec.rangecoder.tf_ops` does the same); neither tflic's Python code nor
tensorflow-compression is needed. It is also what `tflic compress --model=...` takes.
Rebuilding an export (second line) gives one written with tensorflow-compression's range
coder ops tflic's instead, with the same weights, tables and fingerprint.
"""


from absl import app
from absl import flags

from tflic import cli
from tflic import common_flags
from tflic.deploy import savedmodel
from tflic import errors

_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "Training directory (--workdir), or an export to rebuild with this "
    "version's graph (same weights, tables and files).")
_AVERAGE = flags.DEFINE_bool(
    "average", False, "Export the moving average of the weights that the training "
    "directory's checkpoint keeps (training with average_decay > 0).")
_OUT = common_flags.OUT  # the SavedModel directory
_OVERWRITE = common_flags.OVERWRITE
common_flags.declare_key_flags(__name__, "out", "overwrite")


def main(argv):
  if len(argv) > 1:
    raise errors.TflicError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _CHECKPOINT.value or not _OUT.value:
    raise errors.TflicError("--checkpoint and --out are required")
  out, step = savedmodel.export_checkpoint(_CHECKPOINT.value, _OUT.value, _OVERWRITE.value,
                                          average=_AVERAGE.value)
  what = f"step {step} of " if step is not None else ""
  what = f"the weights' average at {what}" if _AVERAGE.value else what
  print(f"exported {what}{_CHECKPOINT.value} to {out}")


if __name__ == "__main__":
  app.run(cli.guarded(main, "export"))
