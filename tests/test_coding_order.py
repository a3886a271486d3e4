"""The coding order and the context masks never let a chunk see an undecoded chunk."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from tflic.codec.deterministic import reference
from tflic.model import backends
from tflic.model import coding_order

SHAPES = [(1, 1), (1, 7), (6, 1), (3, 5), (5, 3), (4, 4), (7, 9)]


def _decode_steps(height, width, k, mode):
  """Step of each chunk by simulating the decoder with step_chunks."""
  steps = np.full((height, width, k), -1)
  for s in range(coding_order.num_steps(height, width, k, mode)):
    positions, group = coding_order.step_chunks(s, height, width, k, mode)
    for i, j in positions.numpy():
      assert steps[i, j, int(group)] == -1, "chunk decoded twice"
      steps[i, j, int(group)] = s
  assert (steps >= 0).all(), "chunk never decoded"
  return steps


@pytest.mark.parametrize("mode", coding_order.MODES)
@pytest.mark.parametrize("height,width", SHAPES)
def test_mask_only_sees_decoded_chunks(height, width, mode):
  k, window = 3, 5
  steps = _decode_steps(height, width, k, mode)
  np.testing.assert_array_equal(
      steps, coding_order.chunk_step(height, width, k, mode).numpy())
  positions = np.array(list(itertools.product(range(height), range(width))), np.int32)
  mask = coding_order.context_mask(height, width, k, window, mode, positions,
                                   tf.range(k)).numpy()
  offsets = coding_order.window_offsets(window)
  mask = mask.reshape(len(positions), k, len(offsets), k)
  for p, (i, j) in enumerate(positions):
    for q in range(k):
      for s, (di, dj) in enumerate(offsets):
        for g in range(k):
          si, sj = i + di, j + dj
          inside = 0 <= si < height and 0 <= sj < width
          if not inside:
            assert not mask[p, q, s, g]
            continue
          decoded_before = steps[si, sj, g] < steps[i, j, q]
          if mode == coding_order.WAVEFRONT:
            same_diagonal_other = si + sj == i + j and (si, sj) != (i, j)
            expected = decoded_before and not same_diagonal_other
          else:
            expected = decoded_before
          assert mask[p, q, s, g] == expected, (i, j, q, di, dj, g)


def test_zigzag_is_the_jpeg_scan():
  order = coding_order.zigzag_positions(3, 3).numpy().tolist()
  assert order == [[0, 0], [0, 1], [1, 0], [2, 0], [1, 1], [0, 2], [1, 2], [2, 1], [2, 2]]


def test_step_counts_of_a_kodak_image():
  assert coding_order.num_steps(32, 48, 4, "serial") == 6144
  assert coding_order.num_steps(32, 48, 4, "wavefront") == 316


def test_wavefront_step_holds_whole_antidiagonal():
  positions, group = coding_order.step_chunks(4 * 3 + 2, 3, 5, 4, "wavefront")
  assert int(group) == 2
  assert positions.numpy().tolist() == [[0, 3], [1, 2], [2, 1]]


def test_unknown_mode_is_rejected():
  with pytest.raises(ValueError, match="unknown decoding mode"):
    coding_order.num_steps(2, 2, 2, "raster")


@pytest.mark.parametrize("mode", coding_order.MODES)
@pytest.mark.parametrize("height,width", [(1, 1), (3, 7), (6, 4)])
def test_numpy_backend_equals_tensorflow(height, width, mode):
  """The numpy reference and TF-free decoders read the same order as the training pass."""
  numpy = backends.NUMPY
  positions = np.stack(np.meshgrid(np.arange(height), np.arange(width), indexing="ij"),
                       -1).reshape(-1, 2).astype(np.int32)
  expected = coding_order.context_mask(height, width, 4, 5, mode, tf.constant(positions),
                                       tf.range(4)).numpy()
  np.testing.assert_array_equal(reference.context_mask(height, width, 4, 5, mode), expected)
  np.testing.assert_array_equal(coding_order.position_rank(height, width, numpy),
                                coding_order.position_rank(height, width))
  np.testing.assert_array_equal(coding_order.chunk_step(height, width, 4, mode, numpy),
                                coding_order.chunk_step(height, width, 4, mode))
  for step in range(coding_order.num_steps(height, width, 4, mode)):
    got = coding_order.step_chunks(step, height, width, 4, mode, numpy)
    want = coding_order.step_chunks(step, height, width, 4, mode)
    np.testing.assert_array_equal(got[0], want[0])
    assert int(got[1]) == int(want[1])
