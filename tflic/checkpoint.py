"""Training directories: the config they were trained with and their checkpoints."""

import os

import tensorflow as tf

from tflic import config as config_lib
from tflic import errors
from tflic import model as model_lib

CONFIG_FILE = "config.json"
CHECKPOINT_SUBDIR = "checkpoints"


def save_config(workdir, cfg):
  """Writes the config next to the checkpoints (atomically)."""
  tf.io.gfile.makedirs(workdir)
  path = os.path.join(workdir, CONFIG_FILE)
  tf.io.gfile.GFile(path + ".tmp", "w").write(cfg.to_json())
  tf.io.gfile.rename(path + ".tmp", path, overwrite=True)


def load_config(workdir):
  """The config a workdir was trained with, or None for a new workdir."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not tf.io.gfile.exists(path):
    return None
  return config_lib.load(path)


def build_model(cfg):
  """A TflicModel with its variables created (by a call on a tiny input)."""
  model = model_lib.TflicModel(cfg.model)
  model(tf.zeros([1, 64, 64, 3]), 0.0, training=True)
  return model


def latest_checkpoint(workdir):
  """The prefix of a training directory's latest checkpoint, or None."""
  return tf.train.latest_checkpoint(os.path.join(workdir, CHECKPOINT_SUBDIR))


def restore_model(workdir):
  """(config, model, step) from a training directory's latest checkpoint."""
  cfg = load_config(workdir)
  latest = latest_checkpoint(workdir) if cfg else None
  if latest is None:
    raise errors.TflicError(f"no trained model in {workdir!r} (expected {CONFIG_FILE} and "
                            f"{CHECKPOINT_SUBDIR}/)")
  model = build_model(cfg)
  step = tf.Variable(0, dtype=tf.int64)
  status = tf.train.Checkpoint(model=model, step=step).restore(latest)
  status.expect_partial().assert_existing_objects_matched()  # optimizer slots may be absent
  return cfg, model, int(step.numpy())


def save_model(workdir, cfg, model, step=0):
  """Writes config and a model-only checkpoint (no optimizer state), e.g. for shipping."""
  save_config(workdir, cfg)
  checkpoint = tf.train.Checkpoint(model=model, step=tf.Variable(step, dtype=tf.int64))
  manager = tf.train.CheckpointManager(
      checkpoint, os.path.join(workdir, CHECKPOINT_SUBDIR), max_to_keep=1)
  return manager.save(checkpoint_number=step)
