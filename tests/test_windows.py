"""Swin windows (tflic.model.windows): one definition, the same on numpy and TensorFlow."""

import numpy as np
import pytest
import tensorflow as tf

from tflic.model import backends
from tflic.model import windows

CASES = [(5, 7, 4, 0), (5, 7, 4, 2), (8, 8, 4, 2), (1, 1, 4, 2), (9, 3, 2, 1)]


def _padded(size, window):
  return (size + window - 1) // window * window


@pytest.mark.parametrize("height,width,window,shift", CASES)
def test_same_region_is_the_same_on_both_backends(height, width, window, shift):
  args = (height, width, _padded(height, window), _padded(width, window), window, shift)
  np.testing.assert_array_equal(windows.same_region(backends.NUMPY, *args),
                                windows.same_region(backends.TENSORFLOW, *args).numpy())


@pytest.mark.parametrize("height,width,window,shift", CASES)
def test_same_region_pairs_real_neighbours_only(height, width, window, shift):
  """A real token attends exactly to the real tokens that were in its region before the
  cyclic shift, padding only to padding: compared with a direct rule on the unshifted
  coordinates."""
  ph, pw = _padded(height, window), _padded(width, window)
  region = windows.same_region(backends.NUMPY, height, width, ph, pw, window, shift)
  # Coordinates (before the shift) of every token of every window.
  rows, cols = np.meshgrid(np.arange(ph), np.arange(pw), indexing="ij")
  coords = np.stack([(rows + shift) % ph, (cols + shift) % pw], -1)[None]
  coords = windows.partition(backends.NUMPY, coords, window)  # [nW, N, 2]
  real = (coords[..., 0] < height) & (coords[..., 1] < width)

  def side(index, size):  # which side of the wrap-around a shifted token came from
    return np.where(index < size - window, 0, np.where(index < size - shift, 1, 2))

  shifted = windows.partition(backends.NUMPY, np.stack([rows, cols], -1)[None], window)
  ids = side(shifted[..., 0], ph) * 3 + side(shifted[..., 1], pw) if shift else 0 * real
  expected = (real[:, :, None] & real[:, None, :] & (ids[:, :, None] == ids[:, None, :]) |
              ~real[:, :, None] & ~real[:, None, :])
  np.testing.assert_array_equal(region, expected)


@pytest.mark.parametrize("backend", [backends.NUMPY, backends.TENSORFLOW],
                         ids=lambda b: b.name)
def test_partition_and_merge_are_inverse(backend):
  x = np.arange(2 * 8 * 12 * 3).reshape(2, 8, 12, 3)
  windowed = windows.partition(backend, x if backend is backends.NUMPY else tf.constant(x), 4)
  assert tuple(np.shape(windowed)) == (2 * 2 * 3, 16, 3)
  np.testing.assert_array_equal(windowed[1, :, 0], x[0, 0:4, 4:8, 0].ravel())
  np.testing.assert_array_equal(windows.merge(backend, windowed, 2, 8, 12, 4), x)


def test_tensorflow_roll_equals_numpy_roll():
  x = np.arange(5 * 7).reshape(5, 7)
  for shifts in ([2, 3], [-2, -3]):
    np.testing.assert_array_equal(backends.TENSORFLOW.roll(tf.constant(x), shifts, [0, 1]),
                                  np.roll(x, shifts, [0, 1]))
