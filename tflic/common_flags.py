"""Flags shared by several `tflic` subcommands.

absl flags are global: subcommands that both take `--model` must share one definition,
or importing both (as the tests do) fails.
"""

import sys

from absl import flags

MODEL = flags.DEFINE_string(
    "model", None, "Exported SavedModel directory or training directory "
    "(default: the model bundled with tflic).")
REFINE_STEPS = flags.DEFINE_integer(
    "refine_steps", 0, "Encoder-side latent refinement steps per image (0: none). Each "
    "costs about a training step's time; the decoder and file format are unchanged.",
    lower_bound=0)
DATASET = flags.DEFINE_string(
    "dataset", None, "Images: a folder or glob. Training takes several, comma-separated "
    "(its default: ../shared/data/train), or tfds:NAME for a tensorflow-datasets dataset "
    "prepared on disk.")
OUT = flags.DEFINE_string("out", None, "Output directory.")
TFDS_DATA_DIR = flags.DEFINE_string(
    "tfds_data_dir", None, "tensorflow-datasets data_dir of tfds:NAME datasets (default: "
    "$TFDS_DATA_DIR, else ~/tensorflow_datasets); `tflic datasets prepare` writes them.")
OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace existing outputs.")
PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")


def declare_key_flags(module_name, *names):
  """Lists these shared flags in the `--help` of module `module_name` (pass __name__)."""
  if module_name == "__main__":  # absl names the main module after the script
    module_name = sys.argv[0]
  for name in names:
    flags.FLAGS.register_key_flag_for_module(module_name, flags.FLAGS[name])


def export_model_and_out(argv):
  """(model path, --out) of an exporter's absl argv; TflicError on stray arguments or a
  missing --out. --model defaults to the bundled model."""
  from tflic import errors  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise errors.TflicError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not OUT.value:
    raise errors.TflicError("--out is required")
  if MODEL.value:
    return MODEL.value, OUT.value
  from tflic.codec import tf_codec  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
  return tf_codec.default_model_path(), OUT.value
