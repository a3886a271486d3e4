"""Two array backends for the integer networks: TensorFlow graph ops and numpy.

The integer networks (`tflic.deterministic.layers`) are written once against this small
interface and run on either backend. Integers are carried in float64 tensors: every
value, product and partial sum the networks form is an integer below 2^53 in magnitude,
so float64 adds and multiplies them exactly whatever the summation order, vector width,
thread count or BLAS library (IEEE-754 leaves no freedom there), and matrix products use
the fast float64 kernels. Division and square roots are corrected to the exact integer
floor (`floordiv`, `isqrt`), so they do not even rely on correct rounding.
"""

import numpy as np


class NumpyOps:
  """The numpy backend: imports no TensorFlow."""

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
  roll = staticmethod(np.roll)
  equal = staticmethod(np.equal)

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



class TfOps:
  """The TensorFlow backend: graph ops, float64."""

  name = "tensorflow"

  def __init__(self):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self.tf = tf
    self.floor = tf.math.floor
    self.sqrt = tf.math.sqrt
    self.maximum = tf.maximum
    self.minimum = tf.minimum
    self.reshape = tf.reshape
    self.transpose = tf.transpose
    self.equal = tf.equal
    self.concat = tf.concat
    self.pad = tf.pad
    self.einsum = tf.einsum
    self.matmul = tf.linalg.matmul

  def constant(self, x):
    return self.tf.convert_to_tensor(x, self.tf.float64)

  def dims(self, x):
    """The sizes of x's axes: Python ints where static, scalar tensors where not."""
    dynamic = self.tf.shape(x)
    return [size if size is not None else dynamic[i] for i, size in enumerate(x.shape)]

  def dense(self, x, w):
    return self.tf.tensordot(x, w, 1)

  def where(self, condition, x, y):
    """tf.where with Python numbers taking the other operand's dtype (else float64)."""
    tf = self.tf
    if not tf.is_tensor(x) and not tf.is_tensor(y):
      dtype = tf.int32 if isinstance(x, int) and isinstance(y, int) else tf.float64
    else:
      dtype = x.dtype if tf.is_tensor(x) else y.dtype
    return tf.where(condition, tf.cast(x, dtype), tf.cast(y, dtype))

  def clip(self, x, low, high):
    return self.tf.clip_by_value(x, low, high)

  def roll(self, x, shift, axis):
    return self.tf.roll(x, shift, axis)

  def reduce_sum(self, x, axis, keepdims=False):
    return self.tf.reduce_sum(x, axis=axis, keepdims=keepdims)

  def reduce_max(self, x, axis, keepdims=False):
    return self.tf.reduce_max(x, axis=axis, keepdims=keepdims)

  def take(self, table, indices):
    return self.tf.gather(table, self.tf.cast(indices, self.tf.int32))

  def gather_rows(self, x, indices):
    return self.tf.gather(x, indices)

  def take_last(self, x, indices):
    return self.tf.gather(x, indices, axis=-1)

  def clip_indices(self, indices, high_0, high_1):
    return self.tf.clip_by_value(indices, 0, self.tf.stack([high_0, high_1]))

  def gather_nd(self, x, indices):
    return self.tf.gather_nd(x, indices)

  def arange(self, n):
    return self.tf.range(n)



NUMPY = NumpyOps()
_TF = []


def tf_ops():
  """The TensorFlow backend (TensorFlow is imported on first use only)."""
  if not _TF:
    _TF.append(TfOps())
  return _TF[0]
