"""tflic.codec.rangecoder writes tfc's exact bytes, reads tfc's streams, and fails fast on hostile ones.

tfc's decoder is only ever run here on streams tfc's own encoder wrote: on
hostile streams it can spin forever (see test_tfc_hang_streams_are_errors).
"""

import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_compression as tfc

from tflic.codec import rangecoder
from tflic.codec.deterministic import reference
from tflic.codec.rangecoder import RangeCoderError

REPO = pathlib.Path(__file__).resolve().parents[1]


def _bundled_tables():
  """A trained model's coding tables: the bundled SavedModel's, as it ships them."""
  with np.load(REPO / "tflic" / "bundled" / "model" / "assets" / reference.FILENAME) as f:
    return {k.removeprefix("tables/"): f[k] for k in f if k.startswith("tables/")}


TABLES = _bundled_tables()
MAX_ESCAPE = 2**30 - 1  # Largest escape magnitude tfc's encoder can write.


def _row(rng, precision, escape):
  """One table row built as tfc's entropy models build them."""
  # Each symbol gets at least one of the 2^precision slots.
  symbols = int(rng.integers(2, min(2**precision, 300) + 1))
  x = np.arange(symbols - escape) - rng.uniform(0, symbols - escape)
  pmf = np.exp(-np.abs(x) / rng.uniform(0.3, 20))
  pmf *= rng.uniform(0.9, 1.0) / pmf.sum()
  if escape:  # Overflow mass, as tfc's ContinuousBatchedEntropyModel appends it.
    pmf = np.append(pmf, max(1 - pmf.sum(), 0))
  cdf = tfc.pmf_to_quantized_cdf(tf.constant(pmf, tf.float32), precision=precision)
  return [-precision if escape else precision] + cdf.numpy().tolist()


def _table(rng, rows, precisions=(12,), escape=None, padding=False):
  """Flat lookup table of `rows` random rows; escape=None mixes rows with and without."""
  out = []
  for _ in range(rows):
    precision = int(rng.choice(precisions))
    has_escape = bool(rng.integers(2)) if escape is None else escape
    if out and out[-1] == precision and not has_escape:
      has_escape = True  # tfc would skip this row's P as padding of the last one.
    row = _row(rng, precision, has_escape)
    out += row + ([2**precision] * int(rng.integers(0, 3)) if padding else [])
  return np.array(out, np.int32)


def _rows(table):
  """(start, precision entry, number of symbols K) of each row, parsed like tfc."""
  rows, i = [], 0
  while i < len(table):
    last = 2**abs(table[i])
    end = i + 2 + int(np.argmax(table[i + 2:] == last))
    rows.append((i, int(table[i]), end - i - 1))
    i = end + 1
    while i < len(table) and table[i] == last:
      i += 1
  return rows


def _values(rng, table, indexes):
  """Random values for `indexes`: in range, at the escape, and far outside."""
  rows = _rows(table)
  out = np.empty(indexes.shape, np.int64)
  for pos, index in np.ndenumerate(indexes):
    _, precision, symbols = rows[index]
    if precision > 0:
      out[pos] = rng.integers(symbols)
      continue
    escape = symbols - 1
    kind = rng.integers(8)
    if kind == 0:
      out[pos] = escape + rng.integers(0, 3)
    elif kind == 1:
      out[pos] = -rng.integers(1, 4)
    elif kind == 2:
      out[pos] = int(rng.choice([-1, 1])) * rng.integers(1, 2**20)
    else:
      out[pos] = rng.integers(max(escape, 1))
  return out.astype(np.int32)


def _tfc_encode(table, calls):
  """tfc stream of `calls`: ("index", indexes, values) or ("channel", values)."""
  handle = tfc.create_range_encoder([], table)
  for call in calls:
    if call[0] == "index":
      handle = tfc.entropy_encode_index(handle, call[1], call[2])
    else:
      handle = tfc.entropy_encode_channel(handle, call[1])
  return tfc.entropy_encode_finalize(handle).numpy()


def _our_encode(table, calls):
  """tflic.codec.rangecoder's stream of `calls` (as for _tfc_encode)."""
  encoder = rangecoder.Encoder(table)
  for call in calls:
    if call[0] == "index":
      encoder.encode_index(call[1], call[2])
    else:
      encoder.encode_channel(call[1])
  return encoder.finish()


def _our_decode(stream, table, calls):
  """Decodes `calls` from `stream`; the values and finish()."""
  decoder = rangecoder.Decoder(stream, table)
  values = [decoder.decode_index(c[1]) if c[0] == "index" else
            decoder.decode_channel(c[1].shape) for c in calls]
  return values, decoder.finish()


def _check_against_tfc(table, calls):
  """Asserts both coders write the same stream and ours decodes it; the stream."""
  stream = _tfc_encode(table, calls)
  assert _our_encode(table, calls) == stream
  values, complete = _our_decode(stream, table, calls)
  for call, decoded in zip(calls, values):
    np.testing.assert_array_equal(decoded, call[-1])
    assert decoded.dtype == np.int32 and decoded.shape == call[-1].shape
  assert complete
  return stream


@pytest.mark.parametrize("seed", range(4))
def test_random_tables_match_tfc(seed):
  rng = np.random.default_rng(seed)
  table = _table(rng, 12, precisions=(12, 12, 1, 3, 8, 15, 16), padding=seed % 2 == 1)
  calls = []
  for shape in [(50,), (0,), (7, 3), (1,), (400,)]:
    indexes = rng.integers(0, len(_rows(table)), shape).astype(np.int32)
    calls.append(("index", indexes, _values(rng, table, indexes)))
  _check_against_tfc(table, calls)


def test_empty_and_one_symbol_streams_match_tfc():
  rng = np.random.default_rng(10)
  table = _table(rng, 3, precisions=(12, 16))
  assert _check_against_tfc(table, []) == b""
  for index, (_, precision, symbols) in enumerate(_rows(table)):
    values = [0, symbols - 1] + ([symbols, -1, MAX_ESCAPE, -MAX_ESCAPE, 2**20 + 5, -2**20]
                                 if precision < 0 else [])
    for value in values:
      _check_against_tfc(table, [("index", np.array([index], np.int32),
                                  np.array([value], np.int32))])


def test_largest_escapes_match_tfc():
  table = np.array([-12, 0, 1, 4094, 4095, 4096], np.int32)
  values = np.array([MAX_ESCAPE + 2, -MAX_ESCAPE, 2**29, -2**29, 3], np.int32)
  _check_against_tfc(table, [("index", np.zeros(5, np.int32), values)])


@pytest.mark.parametrize("channels", [5, 3, 8])
def test_encode_channel_matches_tfc(channels):
  # 5 rows: tfc assigns row = flat position mod 5, the channel only for C = 5.
  rng = np.random.default_rng(channels)
  table = _table(rng, 5)
  values = _values(rng, table, np.arange(40 * channels).reshape(40, channels) % 5)
  _check_against_tfc(table, [("channel", values), ("channel", values[:3])])


def test_matrix_table_matches_flat_table():
  rng = np.random.default_rng(3)
  rows = [_row(rng, 12, True) for _ in range(4)]
  width = max(map(len, rows)) + 2
  matrix = np.array([r + [4096] * (width - len(r)) for r in rows], np.int32)
  indexes = rng.integers(0, 4, 300).astype(np.int32)
  values = _values(rng, np.concatenate([np.array(r) for r in rows]), indexes)
  stream = _check_against_tfc(matrix, [("index", indexes, values)])
  assert _our_encode(matrix.ravel(), [("index", indexes, values)]) == stream


def _codec_like_calls(rng, tables, steps=4):
  """The codec's calls: the z stream by channel, the y stream index by index."""
  z_rows, y_rows = len(tables["z_cdf_offset"]), len(tables["y_cdf_offset"])
  z = ("channel", _values(rng, tables["z_cdf"], np.tile(np.arange(z_rows), (30, 1))))
  y = []
  for _ in range(steps):
    indexes = rng.integers(0, y_rows, (1, 6, 8, 16)).astype(np.int32)
    y.append(("index", indexes, _values(rng, tables["y_cdf"], indexes)))
  return [z], y


def test_real_tables_match_tfc():
  z_calls, y_calls = _codec_like_calls(np.random.default_rng(0), TABLES)
  _check_against_tfc(TABLES["z_cdf"], z_calls)
  _check_against_tfc(TABLES["y_cdf"], y_calls)


@pytest.mark.parametrize("extra", [-40, -1, 1, 6])
def test_decoding_too_few_or_too_many_matches_tfc(extra):
  # Only escape-free rows: tfc's decoder can loop forever past the end of a stream
  # with escapes.
  rng = np.random.default_rng(extra + 100)
  table = _table(rng, 4, precisions=(12, 5, 16), escape=False)
  indexes = rng.integers(0, 4, 200).astype(np.int32)
  stream = _tfc_encode(table, [("index", indexes, _values(rng, table, indexes))])
  decode = np.concatenate([indexes, rng.integers(0, 4, 10).astype(np.int32)])[:200 + extra]
  handle = tfc.create_range_decoder(stream, table)
  handle, expected = tfc.entropy_decode_index(handle, decode, decode.shape, tf.int32)
  values, complete = _our_decode(stream, table, [("index", decode)])
  np.testing.assert_array_equal(values[0], expected.numpy())
  assert complete == bool(tfc.entropy_decode_finalize(handle).numpy())


TABLE_CASES = [
    [12, 0, 4096],
    [-12, 0, 1, 4096],
    [16, 0, 65536, 65536, -1, 0, 2],
    [12, 0, 0, 4096],  # A zero-probability symbol: valid, but not encodable.
    [12, 0, 4096, 4096, 4096, 3, 0, 8],
    [],
    [0, 0, 1],
    [17, 0, 131072],
    [-17, 0, 131072],
    [-2**31, 0, 1],
    [12, 1, 4096],
    [12, 0, 5000, 4096],
    [12, 0, 100],
    [12, 0],
    [12, 0, 4096, 5],
    [1, 0, 2, 2, 0, 1, 4],  # The second row's precision 2 is eaten as padding.
]


@pytest.mark.parametrize("table", TABLE_CASES, ids=range(len(TABLE_CASES)))
def test_table_validation_matches_tfc(table):
  table = np.array(table, np.int32)
  try:
    tfc.create_range_encoder([], table)
    tfc_accepts = True
  except tf.errors.InvalidArgumentError:
    tfc_accepts = False
  if tfc_accepts:
    rangecoder.Encoder(table)
    rangecoder.Decoder(b"", table)
  else:
    with pytest.raises(RangeCoderError, match="malformed lookup table"):
      rangecoder.Encoder(table)
    with pytest.raises(RangeCoderError, match="malformed lookup table"):
      rangecoder.Decoder(b"", table)


def test_invalid_symbols_raise_and_change_nothing():
  table = np.array([-12, 0, 1, 4094, 4095, 4096, 12, 0, 0, 4096, 4096], np.int32)
  encoder = rangecoder.Encoder(table)
  encoder.encode_index([0, 1], [5, 1])
  # Row 1's symbol 0 has zero probability; row 0 escapes from 3 on.
  bad = [([2], [0], "table index 2 "), ([-1], [0], "table index -1 "),
         ([1], [2], "value 2 "), ([1], [0], "value 0 "), ([0], [2**30 + 2], "value 1073741826 "),
         ([0], [-2**30], "value -1073741824 "), ([0], [-2**31], "value -2147483648 "),
         ([0, 0], [1, 2**31], "int32 range"), ([0, 0], [1], "shape")]
  for indexes, values, message in bad:
    with pytest.raises(RangeCoderError, match=message):
      encoder.encode_index(np.array(indexes), np.array(values))
  with pytest.raises(TypeError):
    encoder.encode_index([0], [0.5])
  encoder.encode_index([0], [-7])
  stream = encoder.finish()
  assert stream == _our_encode(table, [("index", np.array([0, 1, 0]), np.array([5, 1, -7]))])
  with pytest.raises(RangeCoderError, match="finished"):
    encoder.encode_index([0], [0])

  decoder = rangecoder.Decoder(stream, table)
  np.testing.assert_array_equal(decoder.decode_index([0, 1]), [5, 1])
  with pytest.raises(RangeCoderError, match="table index 7"):
    decoder.decode_index([0, 7])
  np.testing.assert_array_equal(decoder.decode_index([0]), [-7])
  assert decoder.finish()
  with pytest.raises(RangeCoderError):
    rangecoder.Encoder(np.zeros((2, 2, 2), np.int32))


def _decode_quickly(stream, table, indexes):
  """(values or None, finish()) of a possibly hostile stream, checking the time."""
  start = time.perf_counter()
  decoder = rangecoder.Decoder(stream, table)
  try:
    values = decoder.decode_index(indexes)
  except RangeCoderError:
    values = None
  complete = decoder.finish()
  assert time.perf_counter() - start < 1.0
  return values, complete


def test_tfc_hang_streams_are_errors():
  # After the escape the code sits exactly at the interval's low end, so every
  # following bit, explicit or past the end, decodes as 0: tfc's decoder counts
  # Elias-gamma prefix zeros forever on both streams (checked by hand, killed
  # after 30 s).
  table = np.array([-12, 0, 1, 4094, 4095, 4096], np.int32)
  for stream, message in [(b"\xff\xf0", "past its end"),
                          (b"\xff\xf0\x00\x00\x00\x00", "overlong escape")]:
    decoder = rangecoder.Decoder(stream, table)
    with pytest.raises(RangeCoderError, match=message):
      decoder.decode_index([0])
    assert not decoder.finish()
    with pytest.raises(RangeCoderError, match="already failed"):
      decoder.decode_index([0])
  # The same trap for every row of the real y table.
  y_cdf = TABLES["y_cdf"]
  for index, (start, precision, symbols) in enumerate(_rows(y_cdf)):
    low = (2**32 * int(y_cdf[start + symbols])) >> -precision
    values, complete = _decode_quickly(low.to_bytes(4, "big"), y_cdf, np.array([index]))
    assert values is None and not complete


def _uniform16_table():
  """Row 0: 65536 symbols of probability 2^-16; row 1: [0, 3, 65536] / 2^16."""
  return np.concatenate([[16], np.arange(65537), [16, 0, 3, 65536]]).astype(np.int32)


@pytest.mark.parametrize("run,tail", [(0, []), (40, []), (500, []), (40, [21846]),
                                      (40, [21844]), (300, [21844, 7])])
def test_long_carry_runs_match_tfc(run, tail):
  # Row 1's symbol 0 then row 0's symbol 21845 straddle 2^32 at every
  # renormalisation, so the carry stays pending: tfc writes 2 bytes for any run
  # (and the decoder reads far past them), or 2 + 2 * run once 21844 (carry 0,
  # 0xFF bytes) or 21846 (carry 1, 0x00 bytes) resolves it.
  indexes = np.array([1] + [0] * (run + len(tail)), np.int32)
  values = np.array([0] + [21845] * run + tail, np.int32)
  stream = _check_against_tfc(_uniform16_table(), [("index", indexes, values)])
  if not tail:
    assert stream == (b"\x00\x01" if run else b"")
  elif tail[0] == 21846:
    assert stream.startswith(b"\x00\x01" + b"\x00" * (2 * run))
  else:
    assert stream.startswith(b"\x00\x00" + b"\xff" * (2 * run))


def test_reading_past_the_end_where_tfc_never_does_is_an_error():
  # tfc writes 00 00 for two 1/4096 symbols; without those bytes a
  # renormalisation outside any carry would read 4 bytes past the end.
  table = np.array([-12, 0, 1, 4094, 4095, 4096], np.int32)
  stream = _check_against_tfc(table, [("index", np.zeros(2, np.int32),
                                       np.zeros(2, np.int32))])
  assert stream == b"\x00\x00"
  with pytest.raises(RangeCoderError, match="past its end"):
    rangecoder.Decoder(b"", table).decode_index(np.zeros(2, np.int32))


def test_damaged_streams_end_quickly():
  rng = np.random.default_rng(5)
  _, y_calls = _codec_like_calls(rng, TABLES, steps=2)
  table = TABLES["y_cdf"]
  indexes = np.concatenate([c[1].ravel() for c in y_calls])
  values = np.concatenate([c[2].ravel() for c in y_calls])
  stream = _our_encode(table, [("index", indexes, values)])
  assert _decode_quickly(stream, table, indexes)[1]

  caught = 0
  for _ in range(100):
    flipped = bytearray(stream)
    flipped[rng.integers(len(stream))] ^= 1 << int(rng.integers(8))
    decoded, complete = _decode_quickly(bytes(flipped), table, indexes)
    caught += decoded is None or not complete
  assert caught >= 95

  # Past the end the decoder reads zero bytes, and like tfc's
  # entropy_decode_finalize, finish() is always True once it has read 4 or more
  # of them: a truncated stream mostly decodes to wrong values "successfully",
  # so stream lengths must be checked by the container.
  for n in rng.integers(0, len(stream), 30):
    _decode_quickly(stream[:n], table, indexes)
  for data in [rng.bytes(int(n)) for n in rng.integers(0, 2 * len(stream), 30)] + [
      stream + b"\x01", b"\xff" * len(stream), b"\x00" * 9]:
    _decode_quickly(data, table, indexes)


def test_imports_without_tensorflow(tmp_path):
  code = ("import sys; from tflic.codec import rangecoder; "
          "assert 'tensorflow' not in sys.modules; print(rangecoder.SOURCE_DIR)")
  result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True,
                          capture_output=True, text=True, timeout=60)
  assert (pathlib.Path(result.stdout.strip()) / "range_coder.h").is_file()


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_asan_fuzz_script():
  result = subprocess.run([str(REPO / "tools" / "asan_range_coder.sh"), "6000", "3"],
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stdout + result.stderr
