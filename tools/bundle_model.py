r"""Makes a trained model the bundled one: the SavedModel and LiteRT files in tflic/bundled.

  python tools/bundle_model.py --checkpoint=runs/medium_hifi   # or models/medium_hifi

--checkpoint is a training directory (or an export, rebuilt with this version's graph). The
SavedModel holds its weights' moving average where the checkpoint keeps one, else its
weights (--average / --noaverage choose); the LiteRT files name the SavedModel's
integer_entropy_model.npz (`python -m export.tflite --link_entropy_model`). Both are
written beside the bundled directory and replace its `model` and `lite` together once both
exports have passed their checks: a failed export changes nothing, and the two never hold
different models. The MODEL_CARD, models/ and the reports are the caller's
(docs/deployment.md, "Replacing the bundled model").
"""

import os
import shutil
import sys
import tempfile

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # this checkout's tflic and export/, whatever is installed

# pylint: disable=g-import-not-at-top,wrong-import-position
# TensorFlow before app.run (tflic/cli.py says why), without its C++ start-up chatter.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf

from export import tflite
from tflic import cli
from tflic import errors
from tflic.codec import bitstream
from tflic.codec import tf_codec
from tflic.deploy import savedmodel
from tflic.model import checkpoint
# pylint: enable=g-import-not-at-top,wrong-import-position

PARTS = ("model", "lite")


def _megabytes(directory):
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(directory) for name in names) / 1e6


def bundle(source, bundled, average=None):
  """Exports `source` into `bundled`'s model/ and lite/, replacing them; returns (step, or
  None for an export; whether the weights' average was exported; the LiteRT manifest)."""
  if not os.path.isdir(bundled):
    raise errors.TflicError(f"{bundled} is not a directory")
  is_export = tf_codec.is_saved_model(source)
  latest = None if is_export else checkpoint.latest_checkpoint(source)
  if latest is None and not is_export:
    raise errors.TflicError(f"no trained model in {source} (expected a training directory: "
                            f"{checkpoint.CONFIG_FILE} and {checkpoint.CHECKPOINT_SUBDIR}/, "
                            "or an export)")
  if average is None:
    average = latest is not None and checkpoint.has_average(latest)
  staging = tempfile.mkdtemp(prefix=".bundled-", dir=os.path.dirname(os.path.abspath(bundled)))
  try:
    model, lite = (os.path.join(staging, part) for part in PARTS)
    _, step = savedmodel.export_checkpoint(source, model, average=average)
    # Keras numbers its layers per process: from 0 again, the LiteRT files are byte for byte
    # those of `python -m export.tflite` on the SavedModel.
    tf.keras.backend.reset_uids()
    manifest = tflite.export(savedmodel.restore_model(model), lite,
                             entropy_model=os.path.join(model, bitstream.MODEL_ASSET))
    # Moved as they are: the staged manifest names ../model/..., as it will in `bundled`.
    for part in PARTS:
      target = os.path.join(bundled, part)
      if os.path.exists(target):
        os.rename(target, os.path.join(staging, f"{part}.old"))
      os.rename(os.path.join(staging, part), target)
  finally:
    shutil.rmtree(staging)
  return step, average, manifest


def main(argv):
  if len(argv) > 1:
    raise errors.TflicError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _CHECKPOINT.value:
    raise errors.TflicError("--checkpoint is required")
  step, average, manifest = bundle(_CHECKPOINT.value, _BUNDLED.value, _AVERAGE.value)
  what = "the weights' average" if average else "the weights"
  at = f" at step {step}" if step is not None else ""
  sizes = ", ".join(f"{part}/ {_megabytes(os.path.join(_BUNDLED.value, part)):.1f} MB"
                    for part in PARTS)
  print(f"{_BUNDLED.value}: {what} of {_CHECKPOINT.value}{at}, fingerprint "
        f"{manifest['fingerprint']} ({sizes})")


if __name__ == "__main__":
  # Defined only when run: tflic.export has a --checkpoint and an --average too, and the
  # tests import this module (`bundle`) beside it.
  _CHECKPOINT = flags.DEFINE_string(
      "checkpoint", None, "Training directory whose latest checkpoint to bundle (or an "
      "export).")
  _AVERAGE = flags.DEFINE_bool(
      "average", None, "Bundle the weights' moving average (default: where the checkpoint "
      "keeps one).")
  _BUNDLED = flags.DEFINE_string(
      "bundled", os.path.join(REPO, "tflic", "bundled"), "The bundled directory to update.")
  app.run(cli.guarded(main, "bundle_model"))
