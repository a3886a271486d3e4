"""Training directories: the config they were trained with and their checkpoints."""

import contextlib
import logging
import os
import re
import tempfile

import numpy as np
import tensorflow as tf

from tflic import config as config_lib
from tflic import errors
from tflic.model import tflic_model as model_lib

CONFIG_FILE = "config.json"
CHECKPOINT_SUBDIR = "checkpoints"


# What a checkpoint write killed half-way leaves in CHECKPOINT_SUBDIR: tf.train.Checkpoint
# writes `ckpt-N_temp/part-*`, then merges them into `ckpt-N.*` and removes the directory
# (killed in between, it stays, maybe empty); CheckpointManager writes its `checkpoint`
# state file as `checkpoint.tmp<uuid4 hex>` and renames it.
_CHECKPOINT_TEMP = re.compile(r"ckpt-[0-9]+_temp|checkpoint\.tmp[0-9a-f]{32}")


def save_config(workdir, cfg):
  """Writes the config next to the checkpoints (atomically).

  Training calls this as it starts, on the chief only (tflic/train.py), before any
  checkpoint is written: it also removes what killed checkpoint writes left behind
  (`remove_stale_temps`).
  """
  tf.io.gfile.makedirs(workdir)
  remove_stale_temps(workdir)
  path = os.path.join(workdir, CONFIG_FILE)
  tf.io.gfile.GFile(path + ".tmp", "w").write(cfg.to_json())
  tf.io.gfile.rename(path + ".tmp", path, overwrite=True)


def remove_stale_temps(workdir):
  """Removes the temporary files and directories of killed checkpoint writes in workdir.

  Only names of the checkpoint writers' temporary pattern (`ckpt-N_temp`, `checkpoint.tmp`
  + 32 hex digits) in the checkpoint directory are removed, never a checkpoint. Call it
  where no live process can be writing a checkpoint in this workdir: at the start of
  training, on the chief, before its first save. No other process writes checkpoints
  there then (other workers of a cluster write theirs to local temporary directories;
  exports and evaluation read them, and at most add `*.tables.npz`), so any such temp is
  an orphan of a killed run (as TensorFlow's saver says, "an outdated and orphaned
  temporary directory can be safely removed").

  Returns:
    The paths removed.
  """
  directory = os.path.join(workdir, CHECKPOINT_SUBDIR)
  try:
    names = tf.io.gfile.listdir(directory)
  except tf.errors.NotFoundError:
    return []
  removed = []
  for name in names:
    name = name.rstrip("/")  # listdir marks directories so on some filesystems (gs://)
    if not _CHECKPOINT_TEMP.fullmatch(name):
      continue
    path = os.path.join(directory, name)
    try:
      if tf.io.gfile.isdir(path):
        tf.io.gfile.rmtree(path)
      else:
        tf.io.gfile.remove(path)
    except (OSError, tf.errors.OpError) as e:
      logging.warning("cannot remove the stale checkpoint temp %s: %s", path, e)
      continue
    removed.append(path)
  if removed:
    logging.info("removed %d stale checkpoint temp(s) in %s: %s", len(removed), directory,
                 ", ".join(os.path.basename(p) for p in removed))
  return removed


def load_config(workdir):
  """The config a workdir was trained with, or None for a new workdir."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not tf.io.gfile.exists(path):
    return None
  return config_lib.load(path)


def build_model(cfg, compute_dtype="float32"):
  """A TflicModel with its variables created (by a call on a tiny input)."""
  model = model_lib.TflicModel(cfg.model, compute_dtype)
  model(tf.zeros([1, 64, 64, 3]), 0.0, training=True)
  return model


def latest_checkpoint(workdir):
  """The prefix of a training directory's latest checkpoint, or None."""
  return tf.train.latest_checkpoint(os.path.join(workdir, CHECKPOINT_SUBDIR))


def cast_checkpoint(prefix, out_prefix, dtype):
  """Writes checkpoint `prefix` again at `out_prefix` with its float16 and float32
  tensors in `dtype` (float16 or float32).

  Object-based checkpoints find their tensors by name, and the object graph does not
  record dtypes, so the copy restores wherever the original did once its floats are
  float32 again (`float32_prefix`). Other tensors (the step, the object graph) are copied
  as they are. A float16 copy (a resume point at half the bytes) is refused
  with TflicError where a finite value overflows float16.
  """
  reader = tf.train.load_checkpoint(prefix)
  names, tensors = [], []
  for name, stored in sorted(reader.get_variable_to_dtype_map().items()):
    value = reader.get_tensor(name)
    if stored in (tf.float16, tf.float32):  # other dtypes (e.g. float64) as they are
      cast = np.asarray(value).astype(tf.as_dtype(dtype).as_numpy_dtype)
      if np.any(np.isfinite(value) & ~np.isfinite(cast)):
        raise errors.TflicError(f"{name} has values beyond {tf.as_dtype(dtype).name}'s range")
      value = cast
    names.append(name)
    tensors.append(tf.convert_to_tensor(value))
  tf.raw_ops.SaveV2(prefix=out_prefix, tensor_names=names,
                    shape_and_slices=[""] * len(names), tensors=tensors)


@contextlib.contextmanager
def float32_prefix(prefix):
  """`prefix`, or where its checkpoint stores float16 tensors (a resume point), that of a
  float32 copy in a temporary directory, for the duration of the context: TensorFlow
  restores a variable only from a tensor of its own dtype."""
  if tf.float16 not in tf.train.load_checkpoint(prefix).get_variable_to_dtype_map().values():
    yield prefix
    return
  with tempfile.TemporaryDirectory(prefix="tflic-float32-") as directory:
    copy = os.path.join(directory, os.path.basename(prefix))
    cast_checkpoint(prefix, copy, tf.float32)
    yield copy


# The checkpoint key of the weights' moving average (TrainConfig.average_decay), a second
# model of the same config: its variables are named as the model's, under this root.
AVERAGE = "average"


def has_average(checkpoint_prefix):
  """Whether a checkpoint holds a moving average of the weights."""
  return any(name.startswith(AVERAGE + "/")
             for name, _ in tf.train.list_variables(checkpoint_prefix))


def restore_model(workdir, average=False):
  """(config, model, step) from a training directory's latest checkpoint: its weights, or
  with `average=True` their moving average (TflicError if the checkpoint has none)."""
  cfg = load_config(workdir)
  latest = latest_checkpoint(workdir) if cfg else None
  if latest is None:
    raise errors.TflicError(f"no trained model in {workdir!r} (expected {CONFIG_FILE} and "
                            f"{CHECKPOINT_SUBDIR}/)")
  if average and not has_average(latest):
    raise errors.TflicError(f"{latest} holds no average of the weights (it is kept when "
                            "training with average_decay > 0)")
  model = build_model(cfg)
  step = tf.Variable(0, dtype=tf.int64)
  root = tf.train.Checkpoint(step=step, **{AVERAGE if average else "model": model})
  with float32_prefix(latest) as prefix:
    status = root.restore(prefix)
    status.expect_partial().assert_existing_objects_matched()  # optimizer slots may be absent
  return cfg, model, int(step.numpy())


def save_model(workdir, cfg, model, step=0, dtype="float32"):
  """Writes config and a model-only checkpoint (no optimizer state), e.g. for shipping;
  with dtype="float16" its floats are stored in float16 (`cast_checkpoint`). Returns the
  checkpoint's prefix."""
  save_config(workdir, cfg)
  checkpoint = tf.train.Checkpoint(model=model, step=tf.Variable(step, dtype=tf.int64))
  manager = tf.train.CheckpointManager(
      checkpoint, os.path.join(workdir, CHECKPOINT_SUBDIR), max_to_keep=1)
  prefix = manager.save(checkpoint_number=step)
  if tf.as_dtype(dtype) != tf.float32:
    cast_checkpoint(prefix, prefix + "_cast", dtype)
    for suffix in (".index", ".data-00000-of-00001"):  # SaveV2's files for one shard
      tf.io.gfile.rename(prefix + "_cast" + suffix, prefix + suffix, overwrite=True)
  return prefix
