"""Fused CPU kernels for the training path: LayerNorm, bias + exact GELU, the latent rate.

`layer_norm` and `bias_gelu` compute in float32 on float32 or bfloat16 tensors (outputs
in the input's dtype) with registered gradients, in one pass over each row instead of
TensorFlow's chain of elementwise ops (`_fused_ops.cc`; `setup.py build_ext` builds
`_fused_ops.so`). `noisy_normal_log_prob` is the log-probability of tfc.NoisyNormal, the
latent rate of training (`TflicModel.call`), in one pass each way instead of
tensorflow-probability's log_ndtr composite. They have CPU kernels only: the layers and
the model use them where `enabled()` says so (the library loaded, no GPU or TPU in the
process, not inside `disabled()`, as under XLA, which cannot compile them); elsewhere
they keep TensorFlow's composite ops, which compute the same function up to float
rounding.
"""

import contextlib
import functools
import pathlib
import sys
import threading

import tensorflow as tf

# absolute(), not resolve(): under Bazel's runfiles the library is a symlink beside this.
LIBRARY = pathlib.Path(__file__).absolute().parent / "_fused_ops.so"
_DTYPES = (tf.float32, tf.bfloat16)
_state = threading.local()


@functools.cache
def _ops():
  """The op module, or None if the library is missing or does not load (once)."""
  if not LIBRARY.is_file():
    print(f"tflic: {LIBRARY.name} is not built (`python setup.py build_ext --inplace`): "
          "training uses TensorFlow's slower composite ops", file=sys.stderr)
    return None
  try:
    return tf.load_op_library(str(LIBRARY))
  except (tf.errors.OpError, OSError) as e:
    print(f"tflic: cannot load {LIBRARY}: {str(e).strip().splitlines()[0]}; training uses "
          "TensorFlow's slower composite ops", file=sys.stderr)
    return None


@functools.cache
def _accelerators():
  return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


@contextlib.contextmanager
def disabled():
  """Layers built or traced inside use TensorFlow's composite ops (e.g. under XLA)."""
  previous = getattr(_state, "disabled", False)
  _state.disabled = True
  try:
    yield
  finally:
    _state.disabled = previous


def enabled(dtype=tf.float32):
  """Whether the fused kernels serve tensors of `dtype` here and now."""
  return (tf.as_dtype(dtype) in _DTYPES and not getattr(_state, "disabled", False)
          and not _accelerators() and _ops() is not None)


def layer_norm(x, gamma, beta, epsilon):
  """LayerNorm of `x` over its last axis (float32 statistics), scaled by float32 `gamma`
  and shifted by `beta`; in x's dtype."""
  y, _, _ = _ops().tflic_layer_norm(x, gamma, beta, epsilon=epsilon)
  return y


def bias_gelu(x, bias):
  """The exact GELU of `x + bias` (float32 `bias` over the last axis), in x's dtype."""
  return _ops().tflic_bias_gelu(x, bias)


def noisy_normal_log_prob(u, scale):
  """log(Phi((u + 1/2) / scale) - Phi((u - 1/2) / scale)), elementwise on float32 tensors
  of one shape: `tfc.NoisyNormal(loc=0, scale=scale).log_prob(u)`, to float32 rounding
  (computed in double), from the mode to far tails."""
  return _ops().tflic_noisy_normal_log_prob(u, scale)


@tf.RegisterGradient("TflicLayerNorm")
def _layer_norm_grad(op, dy, unused_dmean, unused_dinv_std):
  x, gamma, _ = op.inputs
  _, mean, inv_std = op.outputs
  return _ops().tflic_layer_norm_grad(dy, x, gamma, mean, inv_std)


@tf.RegisterGradient("TflicBiasGelu")
def _bias_gelu_grad(op, dy):
  x, bias = op.inputs
  return _ops().tflic_bias_gelu_grad(dy, x, bias)


@tf.RegisterGradient("TflicNoisyNormalLogProb")
def _noisy_normal_log_prob_grad(op, dlog_prob):
  u, scale = op.inputs
  return _ops().tflic_noisy_normal_log_prob_grad(dlog_prob, u, scale)
