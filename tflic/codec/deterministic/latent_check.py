"""The file's check of the decoded latents: a 64-bit hash any decoder can recompute.

check = sum over i of mix(mix(i + 1) XOR v_i) mod 2^64, where v is z's symbols followed
by y_hat's integers (each row-major, as int64 two's complement) and mix is SplitMix64's
finalizer. mix is a bijection, so a change of any single value always changes the check;
several changes cancel with probability about 2^-64. Order-free sums vectorize. The C
core (tflic/codec/rangecoder/entropy_core.c, `tec_latent_check`) computes the same.
"""

import numpy as np

_MULTIPLIERS = (0xBF58476D1CE4E5B9, 0x94D049BB133111EB)
_SHIFTS = (30, 27, 31)


def _mix(x, const, xor, right_shift):
  x = xor(x, right_shift(x, _SHIFTS[0]))
  x = x * const(_MULTIPLIERS[0])
  x = xor(x, right_shift(x, _SHIFTS[1]))
  x = x * const(_MULTIPLIERS[1])
  return xor(x, right_shift(x, _SHIFTS[2]))


def _check(values, index, const, xor, right_shift):
  return _mix(xor(_mix(index + const(1), const, xor, right_shift), values), const, xor,
              right_shift)


def numpy_check(z_symbols, y_hat):
  """The check of integer arrays (numpy) as a Python int in [0, 2^64)."""
  values = np.concatenate([np.ravel(z_symbols).astype(np.int64),
                           np.ravel(y_hat).astype(np.int64)]).view(np.uint64)
  index = np.arange(values.size, dtype=np.uint64)
  terms = _check(values, index, np.uint64, np.bitwise_xor,
                 lambda x, n: x >> np.uint64(n))
  return int(np.sum(terms, dtype=np.uint64))
