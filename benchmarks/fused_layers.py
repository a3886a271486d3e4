r"""One LayerNorm and one GeluDense training pass (forward and gradients), fused kernels
(tflic/model/layers/fused_ops.py) against TensorFlow's composite ops, at a Swin stage's shapes;
then the latent rate's (tfc.NoisyNormal's log-probability) at the latent's shape.

  python benchmarks/fused_layers.py                       # medium's first stage at 8 x 128x128
  python benchmarks/fused_layers.py --shape=8,32,32,128 --hidden=512 --rate_shape=8,8,8,192

Both paths run in one process, taking turns (`--rounds`, each `--steps` passes), in
float32 and bfloat16 (the inputs' dtype; the layers' arithmetic stays float32; the rate
is float32 only). Printed: milliseconds per pass (median over rounds) and the ratio.
"""

import statistics
import time

from absl import app
from absl import flags
import tensorflow as tf
import tensorflow_compression as tfc

from tflic.model.layers import fused_ops
from tflic.model.layers import GeluDense
from tflic.model.layers import LayerNorm

_SHAPE = flags.DEFINE_list("shape", ["8", "64", "64", "96"], "Input shape [B, H, W, C].")
_HIDDEN = flags.DEFINE_integer("hidden", 384, "GeluDense's units (the MLP's width).")
_RATE_SHAPE = flags.DEFINE_list("rate_shape", ["8", "8", "8", "192"],
                                "The latent's shape for the rate (medium's at 8 x 128x128).")
_STEPS = flags.DEFINE_integer("steps", 10, "Passes per round.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Rounds.")


def _pass(layer, x, fused):
  """A tf.function: the layer's training forward and the gradients of a sum of it."""

  @tf.function
  def run():
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = layer(x, training=True)
      loss = tf.reduce_sum(tf.cast(y, tf.float32))
    return tape.gradient(loss, [x] + layer.trainable_variables)

  def traced():
    if fused:
      return run()
    with fused_ops.disabled():
      return run()

  return traced


def _rate_pass(shape, fused):
  """A tf.function: the noisy Gaussian's log-probability and the gradients of its sum."""
  scale = tf.exp(tf.random.stateless_uniform(shape, [3, 4], -2.2, 2.0))
  u = tf.random.stateless_normal(shape, [5, 6]) * scale

  @tf.function
  def run():
    with tf.GradientTape() as tape:
      tape.watch([u, scale])
      if fused:
        log_prob = fused_ops.noisy_normal_log_prob(u, scale)
      else:
        log_prob = tfc.NoisyNormal(loc=0.0, scale=scale).log_prob(u)
      loss = tf.reduce_sum(log_prob)
    return tape.gradient(loss, [u, scale])

  return run


def _median_times(runs):
  """{label: milliseconds per pass, the median over rounds} of tf.functions taking turns."""
  times = {label: [] for label in runs}
  for run in runs.values():
    run()  # traces
  for _ in range(_ROUNDS.value):
    for label, run in runs.items():
      start = time.perf_counter()
      for _ in range(_STEPS.value):
        grads = run()
      grads[0].numpy()
      times[label].append((time.perf_counter() - start) / _STEPS.value * 1e3)
  return {label: statistics.median(t) for label, t in times.items()}


def main(argv):
  del argv
  shape = [int(s) for s in _SHAPE.value]
  if not fused_ops.enabled():
    raise SystemExit("the fused kernels are not available here")
  for dtype in ("float32", "bfloat16"):
    x = tf.cast(tf.random.stateless_normal(shape, [1, 2]), dtype)
    policy = "float32" if dtype == "float32" else "mixed_bfloat16"
    for name, layer in (("LayerNorm", LayerNorm(dtype=policy)),
                        ("GeluDense", GeluDense(_HIDDEN.value, dtype=policy))):
      layer(x)  # builds
      times = _median_times({"composite": _pass(layer, x, False),
                             "fused": _pass(layer, x, True)})
      composite, fused = times["composite"], times["fused"]
      print(f"{name} {dtype} {shape} (units {_HIDDEN.value}): composite {composite:.2f} ms, "
            f"fused {fused:.2f} ms, x{composite / fused:.2f}")
  rate_shape = [int(s) for s in _RATE_SHAPE.value]
  times = _median_times({"composite": _rate_pass(rate_shape, False),
                         "fused": _rate_pass(rate_shape, True)})
  composite, fused = times["composite"], times["fused"]
  print(f"NoisyNormal rate float32 {rate_shape}: composite {composite:.2f} ms, "
        f"fused {fused:.2f} ms, x{composite / fused:.2f}")


if __name__ == "__main__":
  app.run(main)
