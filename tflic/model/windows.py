"""Swin windows on any array backend: partition, merge, and which tokens may attend.

One definition for the float Swin block (`tflic.model.layers.SwinBlock`, TensorFlow) and the
integer one of the entropy model's reference (`tflic.codec.deterministic.layers`, numpy); the C
core restates it in C. `ops` is a backend of `tflic.model.backends`.
"""


def partition(ops, x, window):
  """[B, H, W, C] (H, W multiples of window) -> [B * nW, window**2, C]."""
  b, h, w, c = ops.dims(x)
  x = ops.reshape(x, [b, h // window, window, w // window, window, c])
  return ops.reshape(ops.transpose(x, [0, 1, 3, 2, 4, 5]), [-1, window * window, c])


def merge(ops, windows, batch, height, width, window):
  """Inverse of `partition`: [B * nW, window**2, C] -> [B, height, width, C]."""
  c = ops.dims(windows)[-1]
  x = ops.reshape(windows, [batch, height // window, width // window, window, window, c])
  return ops.reshape(ops.transpose(x, [0, 1, 3, 2, 4, 5]), [batch, height, width, c])


def same_region(ops, height, width, padded_height, padded_width, window, shift):
  """bool [nW, N, N]: which tokens of each window of a padded, cyclically shifted
  (by -shift) map may attend to each other.

  A real token attends to the real tokens that were in its region before the shift,
  never to padding, so a block's output never depends on the padding amount; padding
  tokens attend to padding (their outputs are cropped away).
  """
  rows, cols = ops.arange(padded_height), ops.arange(padded_width)
  valid = ops.expand_dims(rows < height, 1) & ops.expand_dims(cols < width, 0)
  if shift:
    # Regions of the shifted map that came from different sides of the image.
    def regions(index, size):
      return ops.where(index < size - window, 0, ops.where(index < size - shift, 1, 2))
    ids = (ops.expand_dims(regions(rows, padded_height), 1) * 3 +
           ops.expand_dims(regions(cols, padded_width), 0))
    valid = ops.roll(valid, [-shift, -shift], [0, 1])
  else:
    ids = ops.expand_dims(rows * 0, 1) + ops.expand_dims(cols * 0, 0)
  ids = ops.where(valid, ids, -1)
  ids = partition(ops, ops.reshape(ids, [1, padded_height, padded_width, 1]), window)
  ids = ops.reshape(ids, [-1, window * window])  # [nW, N]
  return ops.equal(ops.expand_dims(ids, 2), ops.expand_dims(ids, 1))
