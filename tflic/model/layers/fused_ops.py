"""Fused CPU kernels for the training path: LayerNorm, bias + exact GELU, window
attention's heads and softmax, the latent rate.

`layer_norm`, `bias_gelu`, `split_heads` and `window_softmax` compute in float32 on
float32 or bfloat16 tensors (outputs in the input's dtype) with registered gradients, in
one pass over each row instead of TensorFlow's chain of elementwise ops (`_fused_ops.cc`;
`setup.py build_ext` builds `_fused_ops.so`). `noisy_normal_log_prob` is the
log-probability of tfc.NoisyNormal, the latent rate of training (`TflicModel.call`), in
one pass each way instead of tensorflow-probability's log_ndtr composite. They have CPU
kernels only: the layers and the model use them where `enabled()` says so (the library
loaded, no GPU or TPU in the process, not inside `disabled()`, as under XLA, which cannot
compile them); elsewhere they keep TensorFlow's composite ops, which compute the same
function up to float rounding.
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


def dense_parts(dense, inputs, column_scales=None):
  """A Keras Dense layer's product `inputs @ kernel` (over the last axis, in the inputs'
  dtype) and its bias in float32 (zeros if it has none), for a kernel that adds the bias
  itself; `column_scales` [units] multiplies the kernel's and the bias's columns."""
  if not dense.built:  # by a call (on no rows), so its variables get its name scope
    dense(inputs[:0])
  kernel = dense.kernel
  bias = tf.cast(dense.bias, tf.float32) if dense.use_bias else tf.zeros([dense.units])
  if column_scales is not None:
    kernel = tf.cast(kernel, tf.float32) * column_scales
    bias = bias * column_scales
  kernel = tf.cast(kernel, inputs.dtype)
  rank = inputs.shape.rank
  if rank == 2 or rank is None:
    return tf.matmul(inputs, kernel), bias
  product = tf.tensordot(inputs, kernel, [[rank - 1], [0]])
  if not tf.executing_eagerly():
    product.set_shape(inputs.shape[:-1] + [dense.units])
  return product, bias


def split_heads(x, bias, num_heads, parts=3):
  """`x` [M, N, parts D] plus float32 `bias`, as `parts` tensors [M, H, N, D / H] (q, k
  and v of a qkv product)."""
  return _ops().tflic_split_heads(x, bias, num_heads=num_heads, parts=parts)


def window_softmax(logits, bias, mask=None):
  """softmax(logits + bias + mask) over the last axis, for window attention.

  Args:
    logits: [B', H, N, N], the windows of each image contiguous (as `windows.partition`
      lays them out).
    bias: [H, N, N], the relative position bias; gets a gradient (summed over windows).
    mask: None or an additive [W, N, N] (W windows per image); gets no gradient.
  """
  n = logits.shape[-1] if logits.shape[-1] is not None else tf.shape(logits)[-1]
  if mask is None:
    mask = tf.zeros([1, n, n], logits.dtype)
  return _ops().tflic_window_softmax(logits, tf.cast(bias, logits.dtype),
                                     tf.cast(mask, logits.dtype))


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


@tf.RegisterGradient("TflicSplitHeads")
def _split_heads_grad(op, *dheads):
  return _ops().tflic_split_heads_grad(dheads)


@tf.RegisterGradient("TflicWindowSoftmax")
def _window_softmax_grad(op, dprobs):
  dlogits, dbias = _ops().tflic_window_softmax_grad(dprobs, op.outputs[0])
  return dlogits, dbias, None


@tf.RegisterGradient("TflicNoisyNormalLogProb")
def _noisy_normal_log_prob_grad(op, dlog_prob):
  u, scale = op.inputs
  return _ops().tflic_noisy_normal_log_prob_grad(dlog_prob, u, scale)
