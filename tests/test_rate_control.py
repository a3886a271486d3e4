"""Tests of the size-budget search (tflic/codec/rate_control.py), on stand-in encoders."""

import math

import pytest

from tflic.codec import rate_control
from tflic import errors


class _Encoder:
  """A stand-in for Codec.compress: `size(quality)` bytes, with a log of the calls."""

  def __init__(self, size):
    self.size = size
    self.qualities = []

  def __call__(self, quality):
    assert 0.0 <= quality <= 1.0
    self.qualities.append(quality)
    return bytes(self.size(quality))


def _photo_like(quality):
  """Size growing exponentially with quality, as the bundled model's files do."""
  return int(5000 * math.exp(1.4 * quality))


@pytest.mark.parametrize("budget", [5000, 6000, 9000, 15000, 20000])
def test_finds_a_file_near_the_budget_in_few_encodes(budget):
  encoder = _Encoder(_photo_like)
  quality, data = rate_control.fit_to_budget(encoder, budget, tolerance=0.02)
  assert len(data) == _photo_like(quality) <= budget
  assert len(data) >= 0.98 * budget
  assert len(encoder.qualities) <= 5
  assert quality * 65535 == pytest.approx(round(quality * 65535))  # a storable quality


def test_budget_above_the_largest_file_takes_quality_one():
  encoder = _Encoder(_photo_like)
  assert rate_control.fit_to_budget(encoder, 10**6) == (1.0, bytes(_photo_like(1.0)))
  assert encoder.qualities == [1.0]


@pytest.mark.parametrize("budget", [0, 4999])
def test_budget_below_the_smallest_file_is_an_error(budget):
  with pytest.raises(errors.TflicError, match="byte"):
    rate_control.fit_to_budget(_Encoder(_photo_like), budget)


def test_never_returns_a_file_over_budget_even_if_sizes_are_not_monotonic():
  # Sizes that jump around: the search must still return a file it saw fit.
  def erratic(quality):
    return 1000 + int(900 * quality) + (700 if int(quality * 37) % 3 == 1 else 0)

  for budget in range(1500, 2600, 100):
    encoder = _Encoder(erratic)
    quality, data = rate_control.fit_to_budget(encoder, budget, max_calls=8)
    assert len(data) == erratic(quality) <= budget
    assert len(encoder.qualities) <= 8


def test_exact_bisection_ends_on_neighbouring_qualities():
  # A budget no file meets within the tolerance: the search stops when the bracket closes.
  step = lambda q: 100 if q < 0.5 else 200
  quality, data = rate_control.fit_to_budget(_Encoder(step), 150, tolerance=0.0,
                                             max_calls=100)
  assert len(data) == 100
  assert quality == pytest.approx(0.5, abs=1.5 / 65535)
