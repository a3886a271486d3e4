"""The coding order of latent chunks and the context masks that follow from it.

A chunk is one of K channel groups at one position (i, j) of the latent grid. Chunks are
coded channel-first (at a position, group 0, 1, .., K-1), positions along a 2D zigzag
scan: anti-diagonals d = i + j in increasing order, odd diagonals with i ascending, even
ones with i descending (the JPEG zigzag).

Two decoding modes fix which coded chunks a chunk may see (inside its w x w window):
- `serial`: every chunk earlier in the exact zigzag order; (h * w * K) decoding steps.
- `wavefront`: chunks on earlier anti-diagonals, and earlier groups at the same position,
  but nothing else on its own anti-diagonal, so a whole anti-diagonal decodes in one
  step; (h + w - 1) * K steps.

This module is the single source of that order: the training pass (masks) and the
coder (steps) both read it. All functions take dynamic (tensor) sizes.
"""

import tensorflow as tf

# The window slots a chunk can ever see: static, in the TF-free integer model's module,
# which decoders without TensorFlow read too.
from tflic.deterministic.entropy_model import candidate_slots  # pylint: disable=unused-import

SERIAL = "serial"
WAVEFRONT = "wavefront"
MODES = (SERIAL, WAVEFRONT)


def check_mode(mode):
  """Raises ValueError unless `mode` is a known decoding mode."""
  if mode not in MODES:
    raise ValueError(f"unknown decoding mode {mode!r}; expected one of {MODES}")
  return mode


def position_rank(height, width):
  """Rank of every latent position in the zigzag scan: int32 [height, width]."""
  i = tf.range(height)[:, None] + tf.zeros([1, width], tf.int32)
  j = tf.zeros([height, 1], tf.int32) + tf.range(width)[None, :]
  d = i + j
  # Index along the diagonal in scan direction; diagonals never hold more than
  # height positions, so d * height + along is a sort key that respects diagonals.
  along = tf.where(tf.equal(d % 2, 1), i, height - 1 - i)
  key = tf.reshape(d * height + along, [-1])
  order = tf.argsort(key, stable=True)
  rank = tf.math.invert_permutation(order)
  return tf.reshape(tf.cast(rank, tf.int32), [height, width])


def zigzag_positions(height, width):
  """Positions in zigzag order: int32 [height * width, 2] of (i, j)."""
  order = tf.argsort(tf.reshape(position_rank(height, width), [-1]))
  return tf.stack([order // width, order % width], axis=-1)


def num_steps(height, width, num_groups, mode):
  """Number of sequential decoding steps for a latent grid."""
  if check_mode(mode) == SERIAL:
    return height * width * num_groups
  return (height + width - 1) * num_groups


def step_chunks(step, height, width, num_groups, mode):
  """The chunks decoded at `step`: (positions int32 [n, 2], group int32 scalar).

  Serial steps hold one position; wavefront steps hold a whole anti-diagonal, listed
  with i ascending.
  """
  group = step % num_groups
  index = step // num_groups
  if check_mode(mode) == SERIAL:
    positions = zigzag_positions(height, width)[index][None]
  else:
    first = tf.maximum(0, index - (width - 1))
    last = tf.minimum(index, height - 1)
    i = tf.range(first, last + 1)
    positions = tf.stack([i, index - i], axis=-1)
  return positions, group


def window_offsets(window):
  """Relative offsets of the w x w window slots: int32 [w * w, 2], row-major."""
  r = window // 2
  grid = tf.meshgrid(tf.range(-r, r + 1), tf.range(-r, r + 1), indexing="ij")
  return tf.reshape(tf.stack(grid, axis=-1), [-1, 2])


def chunk_step(height, width, num_groups, mode):
  """Decoding step of every chunk: int32 [height, width, num_groups]."""
  groups = tf.range(num_groups)[None, None, :]
  if check_mode(mode) == SERIAL:
    return position_rank(height, width)[:, :, None] * num_groups + groups
  d = tf.range(height)[:, None] + tf.range(width)[None, :]
  return d[:, :, None] * num_groups + groups


def context_mask(height, width, num_groups, window, mode, positions, groups, slots=None):
  """Which window chunks each target chunk may see.

  Args:
    height, width: the latent grid size.
    num_groups: K, channel groups per position.
    window: w, odd side of the square spatial window.
    mode: `serial` or `wavefront`.
    positions: int32 [n, 2], target positions.
    groups: int32 [q], target groups (the same for every position).
    slots: the window slots to list (e.g. `candidate_slots`); None: all w * w.

  Returns:
    bool [n, q, s * K]; the last axis lists window slots (row-major, see
    `window_offsets`) times groups, group fastest. True where the source chunk is inside
    the grid and visible to the target under `mode`.
  """
  check_mode(mode)
  offsets = window_offsets(window)
  if slots is not None:
    offsets = tf.gather(offsets, slots)
  sources = positions[:, None, :] + offsets[None, :, :]  # [n, w*w, 2]
  inside = ((sources[..., 0] >= 0) & (sources[..., 0] < height) &
            (sources[..., 1] >= 0) & (sources[..., 1] < width))
  clipped = tf.clip_by_value(sources, 0, tf.stack([height - 1, width - 1]))
  if mode == SERIAL:
    rank = position_rank(height, width)
    source_rank = tf.gather_nd(rank, clipped)[:, :, None]  # [n, w*w, 1]
    target_rank = tf.gather_nd(rank, positions)[:, None, None]  # [n, 1, 1]
    earlier_position = source_rank < target_rank
  else:
    source_diag = tf.reduce_sum(clipped, axis=-1)[:, :, None]
    target_diag = tf.reduce_sum(positions, axis=-1)[:, None, None]
    earlier_position = source_diag < target_diag
  same_position = tf.reduce_all(tf.equal(offsets, 0), axis=-1)[None, :, None]  # [1, w*w, 1]
  source_groups = tf.range(num_groups)[None, None, :]
  # [n, q, w*w, K]: earlier positions in full, the own position's earlier groups.
  visible = (earlier_position[:, None] |
             (same_position[:, None] &
              (source_groups[:, None] < groups[None, :, None, None])))
  visible &= inside[:, None, :, None]
  shape = tf.shape(visible)
  return tf.reshape(visible, [shape[0], shape[1], -1])
