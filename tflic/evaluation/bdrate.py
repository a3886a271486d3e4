"""Bjøntegaard-delta rate and quality between two rate-distortion curves.

A thin wrapper over the `bjontegaard` package (FAU-LMS), whose PCHIP variant matches the JVET
common-test-conditions spreadsheet. The wrapper sorts the points, drops unusable ones and turns
failures into NaN with a reason and small overlaps into a short note, so one odd curve does not
stop a report.
"""

import math
from typing import NamedTuple, Optional, Sequence

import numpy as np

# PCHIP is the interpolation of the JCT-VC/JVET common test conditions; 'akima' and 'cubic'
# (the original VCEG-M33 polynomial fit) are the package's other choices.
DEFAULT_METHOD = "pchip"
# Below this shared fraction of the two curves' ranges, a BD figure describes only part of
# either curve; it is still given, with a note (the package's own threshold).
MIN_OVERLAP = 0.75


class BdResult(NamedTuple):
  """A BD value (NaN if it could not be computed) and, if any, the reason or a caveat."""
  value: float
  note: Optional[str] = None


def _clean_curve(rates, qualities):
  """Sorted by rate, without non-finite or duplicate points; None if fewer than two remain."""
  rates = np.asarray(rates, np.float64)
  qualities = np.asarray(qualities, np.float64)
  keep = np.isfinite(rates) & np.isfinite(qualities) & (rates > 0)
  rates, qualities = rates[keep], qualities[keep]
  order = np.argsort(rates)
  rates, qualities = rates[order], qualities[order]
  _, unique = np.unique(rates, return_index=True)
  if len(unique) < 2:
    return None
  return rates[unique], qualities[unique]


def _overlap(a, b):
  """The fraction of the union of two intervals (given by samples) that both cover."""
  shared = min(a.max(), b.max()) - max(a.min(), b.min())
  return max(shared, 0.0) / (max(a.max(), b.max()) - min(a.min(), b.min()))


def _bd(function_name, anchor_rates, anchor_qualities, test_rates, test_qualities, method):
  # Lazy: the package imports matplotlib.pyplot, which a run without a report does not need.
  import bjontegaard  # pylint: disable=g-import-not-at-top
  anchor = _clean_curve(anchor_rates, anchor_qualities)
  test = _clean_curve(test_rates, test_qualities)
  if anchor is None or test is None:
    return BdResult(math.nan, "fewer than two rate-distortion points")
  if function_name == "bd_rate":
    # BD-rate integrates rate as a function of quality, which a non-monotonic curve is not.
    if any(np.any(np.diff(qualities) <= 0) for _, qualities in (anchor, test)):
      return BdResult(math.nan, "quality does not increase with rate")
    overlap, axis = _overlap(anchor[1], test[1]), "quality"
  else:
    overlap, axis = _overlap(np.log(anchor[0]), np.log(test[0])), "log-rate"
  if overlap == 0:
    return BdResult(math.nan, f"the curves share no {axis} range")
  try:
    # The overlap is checked above, to give a short note instead of the package's warning.
    value = getattr(bjontegaard, function_name)(
        anchor[0], anchor[1], test[0], test[1], method=method, require_matching_points=False,
        min_overlap=0)
  except ValueError as e:
    return BdResult(math.nan, str(e))
  note = f"{axis} ranges overlap {overlap:.0%}" if overlap < MIN_OVERLAP else None
  return BdResult(float(value), note)


def bd_rate(anchor_rates: Sequence[float], anchor_qualities: Sequence[float],
            test_rates: Sequence[float], test_qualities: Sequence[float],
            method: str = DEFAULT_METHOD) -> BdResult:
  """Average rate difference of test against anchor at equal quality, in percent.

  Negative means the test codec needs fewer bits. Averaged over the quality range both curves
  cover.
  """
  return _bd("bd_rate", anchor_rates, anchor_qualities, test_rates, test_qualities, method)


def bd_quality(anchor_rates: Sequence[float], anchor_qualities: Sequence[float],
               test_rates: Sequence[float], test_qualities: Sequence[float],
               method: str = DEFAULT_METHOD) -> BdResult:
  """Average quality difference of test against anchor at equal rate (BD-PSNR for PSNR).

  In the quality's unit (dB for PSNR); positive means the test codec is better. Averaged over
  the log-rate range both curves cover.
  """
  return _bd("bd_psnr", anchor_rates, anchor_qualities, test_rates, test_qualities, method)
