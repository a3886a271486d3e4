"""The arithmetic of the networks in training: float32, bfloat16 or float16.

Variables stay float32 (Keras mixed precision): a checkpoint does not depend on the
precision that wrote it, and exports build float32 models from it.
"""

import contextlib
import functools

import tensorflow as tf

from tflic.config import PRECISIONS


@functools.lru_cache(maxsize=None)
def _cpu_flags():
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("flags"):
          return frozenset(line.split(":", 1)[1].split())
  except OSError:
    pass
  return frozenset()


def resolve(precision):
  """The compute dtype for a `TrainConfig.precision`; "auto" picks by the hardware.

  "auto": float16 on GPUs (tensor cores), bfloat16 on TPUs and on CPUs with AMX
  (where oneDNN runs bfloat16 matrix products several times faster), else float32.
  """
  if precision not in PRECISIONS:
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
  if precision != "auto":
    return precision
  if tf.config.list_logical_devices("TPU"):
    return "bfloat16"
  if tf.config.list_physical_devices("GPU"):
    return "float16"
  return "bfloat16" if "amx_bf16" in _cpu_flags() else "float32"


@contextlib.contextmanager
def policy(compute_dtype):
  """Keras layers made inside compute in `compute_dtype` (variables float32); None
  keeps the current policy."""
  if compute_dtype is None:
    yield
    return
  previous = tf.keras.mixed_precision.global_policy()
  name = "float32" if compute_dtype == "float32" else f"mixed_{compute_dtype}"
  tf.keras.mixed_precision.set_global_policy(name)
  try:
    yield
  finally:
    tf.keras.mixed_precision.set_global_policy(previous)
