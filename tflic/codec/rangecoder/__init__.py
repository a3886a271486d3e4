"""Range coder byte-compatible with tensorflow-compression 2.14, without TensorFlow.

`Encoder` writes exactly the bytes of `tfc.create_range_encoder([], lookup)`,
`tfc.entropy_encode_index` / `tfc.entropy_encode_channel` and
`tfc.entropy_encode_finalize`; `Decoder` reads them back like
`tfc.create_range_decoder`, `tfc.entropy_decode_index` / `_channel` and
`tfc.entropy_decode_finalize`. `lookup` is the flat int32 table tfc's entropy
models build (`model.cdf`, or the `*_cdf` arrays of a .tables.npz); a 2-D table
is read row by row as tfc does. The C implementation in range_coder.c/.h is
meant to be compiled into apps as is; this package is a thin numpy wrapper.

Unlike tfc, invalid tables, out-of-range indexes or values, and corrupt streams
raise `RangeCoderError` instead of crashing or hanging (see range_coder.h for
the exact list), and decoding takes bounded time per value on any stream.
"""

import pathlib

import numpy as np

from tflic.codec.rangecoder import _binding

RangeCoderError = _binding.RangeCoderError

# Where range_coder.h/.c live, for apps that compile them.
SOURCE_DIR = pathlib.Path(__file__).resolve().parent

_INT32 = np.iinfo(np.int32)


def _int32le(array, name):
  """`array` as little-endian int32 in C order; rejects non-integers and overflow."""
  array = np.asarray(array)
  if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
    raise TypeError(f"{name} must be an integer array, got dtype {array.dtype}")
  if array.size and array.dtype.itemsize >= 4 and array.dtype != np.int32:
    if array.min() < _INT32.min or array.max() > _INT32.max:
      raise RangeCoderError(f"{name} has values outside the int32 range")
  return np.ascontiguousarray(array, dtype="<i4")


def _table(lookup):
  """(little-endian table, row length for a 2-D table or 0)."""
  lookup = _int32le(lookup, "lookup")
  if lookup.ndim not in (1, 2):
    raise RangeCoderError(f"lookup must be 1-D or 2-D, got shape {lookup.shape}")
  return lookup, (lookup.shape[1] if lookup.ndim == 2 else 0)


def _values(data, shape):
  return np.frombuffer(data, dtype="<i4").astype(np.int32).reshape(shape)


class Encoder:
  """Range encoder, the equivalent of `tfc.create_range_encoder([], lookup)`."""

  def __init__(self, lookup):
    """Parses `lookup`, an int32 table; raises RangeCoderError if malformed."""
    table, row_len = _table(lookup)
    self._encoder = _binding.Encoder(table, row_len)

  def encode_index(self, indexes, values):
    """Encodes `values` with table rows `indexes` (int arrays of equal shape, C order).

    Like `tfc.entropy_encode_index`. Raises RangeCoderError, encoding nothing,
    if an index is not a row or a value cannot be coded with its row.
    """
    indexes = _int32le(indexes, "indexes")
    values = _int32le(values, "values")
    if indexes.shape != values.shape:
      raise RangeCoderError(
          f"indexes shape {indexes.shape} != values shape {values.shape}")
    self._encoder.encode_index(indexes, values)

  def encode_channel(self, values):
    """Encodes an int array [..., C] with row = last-axis position (C order).

    Like `tfc.entropy_encode_channel`, which really uses row = flat position
    modulo the number of rows; the two agree when C equals the number of rows.
    """
    self._encoder.encode_channel(_int32le(values, "values"))

  def finish(self):
    """Flushes the encoder and returns the stream (like `tfc.entropy_encode_finalize`)."""
    return self._encoder.finish()


class Decoder:
  """Range decoder, the equivalent of `tfc.create_range_decoder(stream, lookup)`."""

  def __init__(self, stream, lookup):
    """Starts decoding `stream` (bytes-like) with the int32 table `lookup`."""
    table, row_len = _table(lookup)
    self._decoder = _binding.Decoder(stream, table, row_len)

  def decode_index(self, indexes):
    """Decodes one value per entry of `indexes`; an np.int32 array of its shape.

    Like `tfc.entropy_decode_index`. Raises RangeCoderError for an index that
    is not a row (decoding nothing) or a corrupt stream (the decoder then
    refuses further calls and `finish()` returns False).
    """
    indexes = _int32le(indexes, "indexes")
    return _values(self._decoder.decode_index(indexes), indexes.shape)

  def decode_channel(self, shape):
    """Decodes an np.int32 array of `shape` [..., C]; row = last-axis position.

    Like `tfc.entropy_decode_channel(handle, shape, tf.int32)`; see
    `Encoder.encode_channel` for how rows are assigned.
    """
    shape = tuple(int(d) for d in np.atleast_1d(shape))
    if any(d < 0 for d in shape):
      raise RangeCoderError(f"negative dimension in shape {shape}")
    return _values(self._decoder.decode_channel(int(np.prod(shape))), shape)

  def finish(self):
    """Whether the stream was consumed exactly and consistently.

    Like `tfc.entropy_decode_finalize`: False proves a mismatch (e.g. a
    truncated or corrupt stream, too few values decoded, or an earlier
    RangeCoderError); True is likely but not proof of success.
    """
    return self._decoder.finish()
