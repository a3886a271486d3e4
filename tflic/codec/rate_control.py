"""Rate control: the quality whose file fits a size budget.

`fit_to_budget` searches the `quality` knob for the largest file of at most a given number
of bytes. On photos the file size grows with quality (for the bundled model, on every Kodak
image), roughly exponentially, so the search interpolates log(size) between the qualities
that bracket the budget. It does not rely on that: whatever the sizes do, the result is a
file that was actually coded and fits.
"""

import math

from tflic.codec import bitstream
from tflic import errors


def fit_to_budget(compress, max_bytes, tolerance=0.02, max_calls=12):
  """Codes at the highest quality found whose file has at most `max_bytes` bytes.

  Args:
    compress: quality in [0, 1] -> the file's bytes.
    max_bytes: the budget, in bytes.
    tolerance: stop once a file fits and is at least (1 - tolerance) * max_bytes long.
    max_calls: call `compress` at most this many times (at least 2).

  Returns:
    (quality, data): a file of at most `max_bytes` bytes and the quality it was coded at
    (a multiple of 1/65535, as stored in the header).

  Raises:
    TflicError: if even quality 0 gives a file larger than `max_bytes`.
  """
  if max_bytes < 1:
    raise errors.TflicError(f"the size budget must be at least 1 byte, got {max_bytes}")
  steps = bitstream.QUALITY_STEPS  # search over the codes the header can store
  sizes = {}
  fitting = {}

  def code(q):
    data = compress(q / steps)
    sizes[q] = len(data)
    if len(data) <= max_bytes:
      fitting[q] = data
    return len(data)

  if code(steps) <= max_bytes:
    return 1.0, fitting[steps]
  if code(0) > max_bytes:
    raise errors.TflicError(f"no quality fits {max_bytes} bytes: the smallest file "
                            f"(quality 0) has {sizes[0]} bytes")
  lo, hi = 0, steps  # sizes[lo] fits, sizes[hi] does not
  # Aim inside the accepted window, not at its edge.
  aim = math.log(max_bytes * (1 - tolerance / 2))
  while (hi - lo > 1 and len(sizes) < max(max_calls, 2)
         and len(fitting[max(fitting)]) < (1 - tolerance) * max_bytes):
    log_lo, log_hi = math.log(max(sizes[lo], 1)), math.log(sizes[hi])
    t = (aim - log_lo) / (log_hi - log_lo) if log_hi > log_lo else 0.5
    # Keep clear of the bracket's ends, so that it shrinks however the sizes behave.
    margin = max((hi - lo) // 16, 1)
    q = min(max(lo + round(t * (hi - lo)), lo + margin), hi - margin)
    if code(q) <= max_bytes:
      lo = q
    else:
      hi = q
  best = max(fitting)
  return best / steps, fitting[best]
