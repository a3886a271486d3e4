"""Array backends: code written once for numpy and TensorFlow.

The coding order (`tflic.model.coding_order`), the Swin windows (`tflic.model.windows`) and the
integer networks (`tflic.codec.deterministic.layers`, numpy only) are written against this small
interface, so the float model (TensorFlow, in a graph, dynamic sizes) and the TF-free
integer reference (numpy) share one definition. This module imports no TensorFlow:
`TENSORFLOW` imports it on first use.

The integer networks are the reference the C core (tflic/codec/rangecoder/entropy_core.c, which
the codec and tflic-lite run) is tested against. Integers are carried in float64 arrays: every
value, product and partial sum the networks form is an integer below 2^53 in magnitude,
so float64 adds and multiplies them exactly whatever the summation order, vector width,
thread count or BLAS library (IEEE-754 leaves no freedom there), and matrix products use
the fast float64 kernels. Division and square roots are corrected to the exact integer
floor (`floordiv`, `isqrt`), so they do not even rely on correct rounding.
"""

import numpy as np


class NumpyOps:
  """The numpy backend."""

  name = "numpy"

  @staticmethod
  def constant(x):
    return np.asarray(x, np.float64)

  @staticmethod
  def dims(x):
    """The sizes of x's axes, as a list."""
    return list(x.shape)

  @staticmethod
  def dense(x, w):
    """x [..., n] times w [n, m]."""
    # One matrix product: np.matmul on x's own axes would loop over its leading axes,
    # one tiny product per row.
    return np.matmul(x.reshape(-1, x.shape[-1]), w).reshape(x.shape[:-1] + w.shape[-1:])

  @staticmethod
  def matmul(a, b, transpose_b=False):
    return np.matmul(a, np.swapaxes(b, -1, -2) if transpose_b else b)

  @staticmethod
  def einsum(equation, *operands):
    return np.einsum(equation, *operands, optimize=True)

  floor = staticmethod(np.floor)
  sqrt = staticmethod(np.sqrt)
  maximum = staticmethod(np.maximum)
  minimum = staticmethod(np.minimum)
  where = staticmethod(np.where)
  reshape = staticmethod(np.reshape)
  transpose = staticmethod(np.transpose)
  roll = staticmethod(np.roll)  # roll(x, shifts, axes)
  equal = staticmethod(np.equal)
  expand_dims = staticmethod(np.expand_dims)

  @staticmethod
  def clip(x, low, high):
    return np.clip(x, low, high)

  @staticmethod
  def concat(values, axis):
    return np.concatenate(values, axis)

  @staticmethod
  def pad(x, paddings):
    return np.pad(x, paddings)

  @staticmethod
  def reduce_sum(x, axis, keepdims=False):
    return np.sum(x, axis=axis, keepdims=keepdims)

  @staticmethod
  def reduce_max(x, axis, keepdims=False):
    return np.max(x, axis=axis, keepdims=keepdims)

  @staticmethod
  def take(table, indices):
    """table[indices] for float64 integer-valued indices."""
    return table[indices.astype(np.int64)]

  @staticmethod
  def gather_rows(x, indices):
    """x[indices] along axis 0 (int indices)."""
    return x[np.asarray(indices)]

  @staticmethod
  def take_last(x, indices):
    """x[..., indices]."""
    return np.take(x, indices, axis=-1)

  @staticmethod
  def clip_indices(indices, high_0, high_1):
    """int indices [..., 2] clipped to [0, high_0] x [0, high_1]."""
    return np.stack([np.clip(indices[..., 0], 0, high_0), np.clip(indices[..., 1], 0, high_1)],
                    -1)

  @staticmethod
  def gather_nd(x, indices):
    """x [A, B, ...] at int indices [..., 2] -> [..., ...]."""
    indices = np.asarray(indices)
    return x[indices[..., 0], indices[..., 1]]

  @staticmethod
  def arange(n):
    return np.arange(n)

  @staticmethod
  def range(start, limit):
    return np.arange(start, limit)

  @staticmethod
  def stack(values, axis):
    return np.stack(values, axis)

  @staticmethod
  def stable_argsort(x):
    return np.argsort(x, kind="stable")

  @staticmethod
  def invert_permutation(x):
    inverse = np.empty_like(x)
    inverse[x] = np.arange(x.size)
    return inverse

  @staticmethod
  def reduce_all(x, axis):
    return np.all(x, axis=axis)


NUMPY = NumpyOps()


class TensorFlowOps:
  """The TensorFlow backend (what the coding order and the windows use), with ops LiteRT
  has as builtins, so that models built on it convert as they are (export/tflite.py)."""

  name = "tensorflow"

  @property
  def tf(self):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf

  def dims(self, x):
    """The sizes of x's axes: static where known (Keras keeps static shapes), else
    scalar tensors."""
    dynamic = self.tf.shape(x)
    return [size if size is not None else dynamic[i] for i, size in enumerate(x.shape)]

  def arange(self, n):
    return self.tf.range(n)

  def range(self, start, limit):
    return self.tf.range(start, limit)

  def where(self, condition, x, y):
    return self.tf.where(condition, x, y)

  def reshape(self, x, shape):
    return self.tf.reshape(x, shape)

  def transpose(self, x, perm):
    return self.tf.transpose(x, perm)

  def expand_dims(self, x, axis):
    # Not x[:, None]: new-axis indexing is a StridedSlice LiteRT leaves to flex ops.
    return self.tf.expand_dims(x, axis)

  def equal(self, x, y):
    return self.tf.equal(x, y)

  def roll(self, x, shifts, axes):
    """np.roll for |shift| below every size along `axes`: a slice and a concat per axis
    (tf.roll is a flex op in LiteRT). Only moves values."""
    for shift, axis in zip(shifts, axes):
      lead = (slice(None),) * axis
      x = self.tf.concat([x[lead + (slice(-shift, None),)], x[lead + (slice(None, -shift),)]],
                         axis)
    return x

  def stack(self, values, axis):
    return self.tf.stack(values, axis)

  def stable_argsort(self, x):
    return self.tf.argsort(x, stable=True)

  def invert_permutation(self, x):
    return self.tf.math.invert_permutation(x)

  def gather_nd(self, x, indices):
    return self.tf.gather_nd(x, indices)

  def gather_rows(self, x, indices):
    return self.tf.gather(x, indices)

  def clip_indices(self, indices, high_0, high_1):
    return self.tf.clip_by_value(indices, 0, self.tf.stack([high_0, high_1]))

  def reduce_all(self, x, axis):
    return self.tf.reduce_all(x, axis=axis)

  def reduce_sum(self, x, axis):
    return self.tf.reduce_sum(x, axis=axis)

  def maximum(self, x, y):
    return self.tf.maximum(x, y)

  def minimum(self, x, y):
    return self.tf.minimum(x, y)


TENSORFLOW = TensorFlowOps()
