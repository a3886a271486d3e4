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

This module is the single source of that order for every implementation in Python: the
training pass (masks, TensorFlow), the numpy reference of the integer model and its
coding loop (`tflic.codec.deterministic`). Functions of a grid size take an array backend
`ops` (`tflic.model.backends`): TensorFlow by default (dynamic tensor sizes inside a graph), or
numpy. The module imports no TensorFlow itself, so TF-free
decoders read it too. The C core (tflic/codec/rangecoder/entropy_core.c) restates the order in
C, where it runs.
"""

import numpy as np

from tflic.model.backends import TENSORFLOW

SERIAL = "serial"
WAVEFRONT = "wavefront"
MODES = (SERIAL, WAVEFRONT)


def check_mode(mode):
  """Raises ValueError unless `mode` is a known decoding mode."""
  if mode not in MODES:
    raise ValueError(f"unknown decoding mode {mode!r}; expected one of {MODES}")
  return mode


def window_offsets(window):
  """(di, dj) of the w x w window slots, row-major: int32 [w * w, 2]."""
  r = window // 2
  grid = np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1), indexing="ij")
  return np.stack(grid, -1).reshape(-1, 2).astype(np.int32)


def candidate_slots(window, mode):
  """The window slots a chunk can ever see in `mode`: int32 [s].

  Later anti-diagonals are never visible, nor (wavefront) other positions of the chunk's
  own. The others are masked out of the attention, where their weight is exactly 0, so
  leaving them out gives the same values with less than half the work.
  """
  offsets = window_offsets(window)
  diagonal = offsets.sum(-1)
  if check_mode(mode) == SERIAL:
    visible = diagonal <= 0
  else:
    visible = (diagonal < 0) | np.all(offsets == 0, -1)
  return np.flatnonzero(visible).astype(np.int32)


def _grid(height, width, ops):
  """(i, j) of every position, each int32 [height, width]."""
  i = ops.arange(height)[:, None] + ops.arange(width)[None, :] * 0
  j = ops.arange(height)[:, None] * 0 + ops.arange(width)[None, :]
  return i, j


def position_rank(height, width, ops=TENSORFLOW):
  """Rank of every latent position in the zigzag scan: int [height, width]."""
  i, j = _grid(height, width, ops)
  d = i + j
  # Index along the diagonal in scan direction; diagonals never hold more than
  # height positions, so d * height + along is a sort key that respects diagonals.
  along = ops.where(d % 2 == 1, i, height - 1 - i)
  order = ops.stable_argsort(ops.reshape(d * height + along, [-1]))
  return ops.reshape(ops.invert_permutation(order), [height, width])


def zigzag_positions(height, width, ops=TENSORFLOW):
  """Positions in zigzag order: int [height * width, 2] of (i, j)."""
  order = ops.stable_argsort(ops.reshape(position_rank(height, width, ops), [-1]))
  return ops.stack([order // width, order % width], -1)


def num_steps(height, width, num_groups, mode):
  """Number of sequential decoding steps for a latent grid."""
  if check_mode(mode) == SERIAL:
    return height * width * num_groups
  return (height + width - 1) * num_groups


def step_chunks(step, height, width, num_groups, mode, ops=TENSORFLOW):
  """The chunks decoded at `step`: (positions int [n, 2], group scalar).

  Serial steps hold one position; wavefront steps hold a whole anti-diagonal, listed
  with i ascending.
  """
  group = step % num_groups
  index = step // num_groups
  if check_mode(mode) == SERIAL:
    positions = ops.gather_rows(zigzag_positions(height, width, ops), index)[None]
  else:
    i = ops.range(ops.maximum(0, index - (width - 1)), ops.minimum(index, height - 1) + 1)
    positions = ops.stack([i, index - i], -1)
  return positions, group


def chunk_step(height, width, num_groups, mode, ops=TENSORFLOW):
  """Decoding step of every chunk: int [height, width, num_groups]."""
  groups = ops.arange(num_groups)[None, None, :]
  if check_mode(mode) == SERIAL:
    return position_rank(height, width, ops)[:, :, None] * num_groups + groups
  i, j = _grid(height, width, ops)
  return (i + j)[:, :, None] * num_groups + groups


def context_mask(height, width, num_groups, window, mode, positions, groups, slots=None,
                 ops=TENSORFLOW):
  """Which window chunks each target chunk may see.

  Args:
    height, width: the latent grid size.
    num_groups: K, channel groups per position.
    window: w, odd side of the square spatial window.
    mode: `serial` or `wavefront`.
    positions: int32 [n, 2], target positions.
    groups: int32 [q], target groups (the same for every position).
    slots: the window slots to list (e.g. `candidate_slots`); None: all w * w.
    ops: the array backend (`tflic.model.backends`: TENSORFLOW or NUMPY).

  Returns:
    bool [n, q, s * K]; the last axis lists window slots (row-major, see
    `window_offsets`) times groups, group fastest. True where the source chunk is inside
    the grid and visible to the target under `mode`.
  """
  check_mode(mode)
  offsets = window_offsets(window)
  if slots is not None:
    offsets = offsets[np.asarray(slots)]
  sources = positions[:, None, :] + offsets[None, :, :]  # [n, s, 2]
  inside = ((sources[..., 0] >= 0) & (sources[..., 0] < height) &
            (sources[..., 1] >= 0) & (sources[..., 1] < width))
  clipped = ops.clip_indices(sources, height - 1, width - 1)
  if mode == SERIAL:
    rank = position_rank(height, width, ops)
    source_rank = ops.gather_nd(rank, clipped)[:, :, None]  # [n, s, 1]
    target_rank = ops.gather_nd(rank, positions)[:, None, None]  # [n, 1, 1]
    earlier_position = source_rank < target_rank
  else:
    source_diag = ops.reduce_sum(clipped, -1)[:, :, None]
    target_diag = ops.reduce_sum(positions, -1)[:, None, None]
    earlier_position = source_diag < target_diag
  same_position = np.all(offsets == 0, -1)[None, :, None]  # [1, s, 1]
  source_groups = np.arange(num_groups, dtype=np.int32)[None, None, :]
  # [n, q, s, K]: earlier positions in full, the own position's earlier groups.
  visible = (earlier_position[:, None] |
             (same_position[:, None] &
              (source_groups[:, None] < groups[None, :, None, None])))
  visible &= inside[:, None, :, None]
  n, q = ops.dims(visible)[:2]
  return ops.reshape(visible, [n, q, -1])
