r"""Measures training speed (steps/s, pixels/s) of a config, with and without XLA.

  python benchmarks/train_speed.py --config=small --steps=20

Uses random crops of the training images; the first steps (tracing, compilation) are
excluded from the timing.
"""

import time

from absl import app
from absl import flags
import tensorflow as tf

from tflic import config as config_lib
from tflic import data
from tflic import training

_CONFIG = flags.DEFINE_string("config", "small", "Config name or path.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps first.")
_DATASET = flags.DEFINE_string("dataset", "../shared/data/train", "Training images.")
_JIT = flags.DEFINE_multi_enum("jit", ["off", "on"], ["off", "on"], "XLA settings to time.")
_BATCH = flags.DEFINE_integer("batch_size", None, "Override the batch size.")


def main(argv):
  del argv
  cfg = config_lib.load(_CONFIG.value)
  train_cfg = cfg.train
  batch_size = _BATCH.value or train_cfg.batch_size
  batches = iter(data.train_dataset(_DATASET.value, train_cfg.patch_size, batch_size))
  for jit in _JIT.value:
    trainer = training.Trainer(cfg, "/tmp/tflic_speed_unused", tf.distribute.get_strategy(),
                            jit_compile=jit == "on")
    for _ in range(_WARMUP.value):
      trainer.train_step(next(batches))
    start = time.perf_counter()
    for _ in range(_STEPS.value):
      trainer.train_step(next(batches))
    seconds = (time.perf_counter() - start) / _STEPS.value
    pixels = batch_size * train_cfg.patch_size**2
    print(f"{cfg.name}: params={trainer.parameter_count():,} batch={batch_size}x"
          f"{train_cfg.patch_size}^2 jit={jit}: {1 / seconds:.2f} steps/s, "
          f"{pixels / seconds / 1e6:.3f} Mpixel/s", flush=True)


if __name__ == "__main__":
  app.run(main)
