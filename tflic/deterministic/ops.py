"""The array backend of the readable integer networks: numpy.

The integer networks (`tflic.deterministic.layers`) and the coding order
(`tflic.coding_order`, whose default backend is TensorFlow) are written against this small
interface. They are the reference the C core (tflic/rangecoder/entropy_core.c, which the
codec and tflic-lite run) is tested against. Integers are carried in float64 arrays: every
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
