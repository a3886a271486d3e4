"""tflic.codec.rangecoder.tf_ops: tfc's exact streams from pure TF ops, bounded decoding, SavedModels.

tfc's decoder is only run here on streams tfc's own encoder wrote (it can spin
forever on hostile ones; see test_range_coder.py).
"""

import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_compression as tfc

from tflic.codec.rangecoder import tf_ops
from tflic import errors
# The random tables and values (escapes up to 2^20, negatives) of the C coder's tests.
from test_range_coder import REPO, TABLES, _row, _rows, _table, _values  # pylint: disable=g-bad-import-order

ESCAPE_ROW = np.array([-12, 0, 1, 4094, 4095, 4096], np.int32)


def _tfc_stream(table, indexes, values):
  handle = tfc.create_range_encoder([], table)
  handle = tfc.entropy_encode_index(handle, indexes, values)
  return tfc.entropy_encode_finalize(handle).numpy()


def _tfc_decode(stream, table, indexes):
  """(values, entropy_decode_finalize) of tfc's decoder."""
  handle = tfc.create_range_decoder(stream, table)
  handle, values = tfc.entropy_decode_index(handle, indexes, indexes.shape, tf.int32)
  return values.numpy(), bool(tfc.entropy_decode_finalize(handle).numpy())


def _decode(stream, table, chunks, what="stream"):
  """Decodes the index arrays `chunks` in turn: (values of each, final state, finish)."""
  state = tf_ops.decoder_start(stream)
  values = []
  for indexes in chunks:
    state, decoded = tf_ops.decode(stream, state, indexes, table, what=what)
    assert decoded.dtype == tf.int32 and decoded.shape == indexes.shape
    values.append(decoded.numpy())
  return values, state.numpy(), bool(tf_ops.decoder_finish(stream, state).numpy())


def _check_against_tfc(table, indexes, values, splits=(0.3, 0.31, 0.8)):
  """Same stream as tfc; decoding tfc's stream in one call or in chunks gives the values."""
  stream = _tfc_stream(table, indexes, values)
  assert tf_ops.encode(indexes, values, table).numpy() == stream
  (whole,), state, complete = _decode(stream, table, [indexes])
  np.testing.assert_array_equal(whole, values)
  assert complete
  flat = indexes.ravel()
  chunks = np.split(flat, [int(s * flat.size) for s in splits])
  parts, chunked_state, chunked_complete = _decode(stream, table, chunks)
  np.testing.assert_array_equal(np.concatenate(parts), values.ravel())
  np.testing.assert_array_equal(chunked_state, state)
  assert chunked_complete
  return stream


@pytest.fixture(scope="module")
def model_tables():
  """Tables of tfc's entropy models (a batched logistic, an indexed Gaussian) and tflic's."""
  batched = tfc.ContinuousBatchedEntropyModel(
      tfc.NoisyLogistic(loc=0., scale=[0.2, 0.7, 3., 40., 300.]), coding_rank=1,
      compression=True)
  indexed = tfc.LocationScaleIndexedEntropyModel(
      tfc.NoisyNormal, 24, lambda i: tf.exp(tf.cast(i, tf.float32) / 3 - 2), coding_rank=1,
      compression=True)
  return {"batched": batched.cdf.numpy(), "indexed": indexed.cdf.numpy(),
          "y": TABLES["y_cdf"], "z": TABLES["z_cdf"]}


@pytest.mark.parametrize("name", ["batched", "indexed", "y", "z"])
def test_model_tables_match_tfc(model_tables, name):
  table = model_tables[name]
  rng = np.random.default_rng(len(name))
  indexes = rng.integers(0, len(_rows(table)), (3, 40, 50)).astype(np.int32)
  _check_against_tfc(table, indexes, _values(rng, table, indexes))


@pytest.mark.parametrize("seed", range(3))
def test_hand_made_tables_match_tfc(seed):
  rng = np.random.default_rng(seed)
  table = _table(rng, 10, precisions=(12, 1, 3, 8, 15, 16), padding=True)
  indexes = rng.integers(0, 10, 3000).astype(np.int32)
  values = _values(rng, table, indexes)
  escape_rows = [i for i, (_, p, _) in enumerate(_rows(table)) if p < 0]
  if escape_rows:  # The largest magnitudes tfc's encoder can write.
    indexes[:2] = escape_rows[0]
    symbols = _rows(table)[escape_rows[0]][2]
    values[:2] = [-(2**30 - 1), 2**30 - 1 + symbols - 2]
  _check_against_tfc(table, indexes, values)


def test_matrix_tables_match_tfc():
  rng = np.random.default_rng(3)
  rows = [_row(rng, int(rng.choice([12, 16])), bool(i % 2)) for i in range(5)]
  width = max(map(len, rows)) + 2
  matrix = np.array([r + [2**abs(r[0])] * (width - len(r)) for r in rows], np.int32)
  indexes = rng.integers(0, 5, (20, 30)).astype(np.int32)
  values = _values(rng, np.concatenate([np.array(r) for r in rows]), indexes)
  stream = _check_against_tfc(matrix, indexes, values)
  assert tf_ops.encode(indexes, values, matrix.ravel()).numpy() == stream


def test_kernels_notice_changed_tables():
  # A kernel reuses the last table it parsed only while the entries are identical.
  tables = [np.array(t, np.int32) for t in [[12, 0, 1000, 4096, -12, 0, 3000, 4095, 4096],
                                            [12, 0, 3000, 4096, -12, 0, 1000, 4095, 4096]]]
  indexes = np.array([0, 1, 0, 1, 1], np.int32)
  values = np.array([0, 0, 1, 1, -3], np.int32)
  @tf.function(input_signature=[tf.TensorSpec([None], tf.int32)] * 2 +
               [tf.TensorSpec([9], tf.int32)])
  def roundtrip(indexes, values, table):
    stream = tf_ops.encode(indexes, values, table)
    _, decoded = tf_ops.decode(stream, tf_ops.decoder_start(stream), indexes, table)
    return stream, decoded
  for table in tables + tables:
    stream = _tfc_stream(table, indexes, values)
    assert tf_ops.encode(indexes, values, table).numpy() == stream
    np.testing.assert_array_equal(_decode(stream, table, [indexes])[0][0], values)
    encoded, decoded = roundtrip(indexes, values, table)
    assert encoded.numpy() == stream
    np.testing.assert_array_equal(decoded, values)


def test_empty_streams_and_channel_order_match_tfc(model_tables):
  table = model_tables["batched"]
  empty = np.zeros([0], np.int32)
  assert _check_against_tfc(table, empty, empty, splits=()) == b""
  # entropy_decode_channel == decode with the channel number as the index.
  rng = np.random.default_rng(7)
  values = _values(rng, table, np.broadcast_to(np.arange(5, dtype=np.int32), (30, 5)))
  handle = tfc.entropy_encode_channel(tfc.create_range_encoder([], table), values)
  stream = tfc.entropy_encode_finalize(handle).numpy()
  channels = tf.broadcast_to(tf.range(5), [30, 5])
  assert tf_ops.encode(channels, values, table).numpy() == stream
  handle, expected = tfc.entropy_decode_channel(tfc.create_range_decoder(stream, table),
                                                [30, 5], tf.int32)
  _, decoded = tf_ops.decode(stream, tf_ops.decoder_start(stream), channels, table)
  np.testing.assert_array_equal(decoded, expected)


@pytest.mark.parametrize("extra", [-40, -1, 0, 1, 6])
def test_decoding_too_few_or_too_many_matches_tfc(extra):
  # Escape-free rows only: past the end of a stream with escapes tfc's decoder can hang.
  rng = np.random.default_rng(extra + 100)
  table = _table(rng, 4, precisions=(12, 5, 16), escape=False)
  indexes = rng.integers(0, 4, 200).astype(np.int32)
  stream = _tfc_stream(table, indexes, _values(rng, table, indexes))
  decode = np.concatenate([indexes, rng.integers(0, 4, 10).astype(np.int32)])[:200 + extra]
  expected, tfc_complete = _tfc_decode(stream, table, decode)
  (values,), state, complete = _decode(stream, table, [decode])
  np.testing.assert_array_equal(values, expected)
  # Unread bytes that are all zero count as consumed here (range_coder.h), not in tfc.
  assert complete == tfc_complete or (complete and not any(stream[state[0]:]))
  assert complete or extra != 0  # True may also follow extra values: a weak check, like tfc's.


def _message(error):
  """The op's line of a TF error, without TF's decoration of eager and graph errors."""
  lines = [line for line in error.message.splitlines() if line.strip()]
  line = next(line for line in reversed(lines) if not line.startswith(("\t", " ")))
  return line.split("}} ", 1)[-1].split(" [Op:", 1)[0]


def _error(function, *args, **kwargs):
  """The InvalidArgumentError line `function` raises."""
  with pytest.raises(tf.errors.InvalidArgumentError) as info:
    function(*args, **kwargs)
  return _message(info.value)


def test_hostile_streams_fail_fast_with_one_line():
  # tfc's decoder spins forever on both (the escape's Elias-gamma prefix reads zeros).
  start = time.perf_counter()
  for stream, message in [
      (b"\xff\xf0", "corrupt tflic file: y stream: truncated (position 0 of 1 needs data "
                    "past its 2 bytes)"),
      (b"\xff\xf0" + bytes(4), "corrupt tflic file: y stream: overlong escape code at "
                               "position 0 of 1")]:
    state = tf_ops.decoder_start(stream)
    assert _error(tf_ops.decode, stream, state, [0], ESCAPE_ROW, what="y stream") == message
  assert time.perf_counter() - start < 1


def test_invalid_inputs_are_one_line_errors():
  table = np.concatenate([ESCAPE_ROW, [12, 0, 0, 4096]]).astype(np.int32)
  stream = tf_ops.encode([0, 1], [-7, 1], table).numpy()
  start = tf_ops.decoder_start(stream)
  decode = lambda *args: tf_ops.decode(*args, what="z stream")
  assert (_error(decode, stream, start, [0, 2], table) ==
          "corrupt tflic file: z stream: table index 2 at position 1 of 2 is not in [0, 2)")
  assert (_error(decode, stream, start, [0], [12, 0, 5000, 4096]) ==
          "z stream: malformed lookup table at entry 3 (of 4)")
  assert _error(decode, stream, start, [0], [[12, 0, 4096, 4096], [12, 0, 100, 50]]) == (
      "z stream: malformed lookup table at entry 7 (of 8)")
  assert _error(decode, stream, start, [0], np.zeros([2, 0], np.int32)) == (
      "z stream: malformed lookup table at entry 0 (of 0)")
  for state in [[0, 0, 0, 0, 0], start[:4], [4, 0, 2**32 - 1, 0, -3], [4, 9, 2**16, 8, 0]]:
    assert _error(decode, stream, tf.constant(state, tf.int64), [0], table) == (
        "z stream: invalid range decoder state (expected the int64[5] of decoder_start or "
        "decode)")
  failed = tf.tensor_scatter_nd_update(start, [[4]], tf.constant([-8], tf.int64))  # Escape
  assert _error(decode, stream, failed, [0], table) == (
      "corrupt tflic file: z stream: the decoder state records an earlier stream error")
  assert not tf_ops.decoder_finish(stream, failed)

  encode = lambda *args: tf_ops.encode(*args, what="y stream")
  assert _error(encode, [0, 3], [1, 1], table) == (
      "y stream: table index 3 at position 1 is not in [0, 2)")
  suffix = " (out of range, zero probability, or escape magnitude >= 2^30)"
  for index, value in [(1, 0), (1, 2), (0, 2**30 + 2), (0, -2**30), (0, -2**31)]:
    assert _error(encode, [0, index], [0, value], table) == (
        f"y stream: value {value} at position 1 cannot be coded with table row {index}"
        + suffix)
  assert _error(encode, [0, 0], [1], table) == "y stream: indexes shape [2] != values shape [1]"
  with pytest.raises(ValueError):  # Static shapes disagree: caught when building the graph.
    tf.function(encode).get_concrete_function(*[tf.TensorSpec(s, tf.int32) for s in [2, 1, 9]])
  assert (_error(encode, [0], [0], np.zeros([2, 2, 2], np.int32)) ==
          "y stream: lookup table must be rank 1 or 2, got shape [2,2,2]")


def test_damaged_streams_end_quickly(model_tables):
  table = model_tables["y"]
  rng = np.random.default_rng(5)
  indexes = rng.integers(0, len(_rows(table)), 4000).astype(np.int32)
  stream = tf_ops.encode(indexes, _values(rng, table, indexes), table).numpy()
  damaged = [stream[:n] for n in rng.integers(0, len(stream), 20)]
  damaged += [rng.bytes(int(n)) for n in rng.integers(0, 2 * len(stream), 20)]
  damaged += [b"\xff" * len(stream), bytes(9), stream + b"\x01"]
  for _ in range(20):
    flipped = bytearray(stream)
    flipped[rng.integers(len(stream))] ^= 1 << int(rng.integers(8))
    damaged.append(bytes(flipped))
  start, failed = time.perf_counter(), 0
  for data in damaged:
    try:
      _decode(data, table, [indexes[:1000], indexes[1000:]])
    except tf.errors.InvalidArgumentError as e:
      assert _message(e).startswith("corrupt tflic file: stream: ")
      failed += 1
  assert 0 < failed < len(damaged)
  assert time.perf_counter() - start < 5


def test_ops_in_tf_function_and_while_loop(model_tables):
  table = tf.constant(model_tables["y"])
  rng = np.random.default_rng(9)
  indexes = rng.integers(0, len(_rows(model_tables["y"])), (6, 7, 8)).astype(np.int32)
  values = _values(rng, model_tables["y"], indexes)

  @tf.function(input_signature=[tf.TensorSpec([None, None, 8], tf.int32)] * 2)
  def encode(indexes, values):
    return tf_ops.encode(indexes, values, table)

  @tf.function(input_signature=[tf.TensorSpec([], tf.string),
                                tf.TensorSpec([None, None, 8], tf.int32)])
  def decode(stream, indexes):
    def body(i, state, out):
      state, row = tf_ops.decode(stream, state, indexes[i], table, what="y stream")
      assert row.shape.as_list() == [None, 8] and state.shape == [tf_ops.STATE_SIZE]
      return i + 1, state, out.write(i, row)
    _, state, out = tf.while_loop(
        lambda i, *_: i < tf.shape(indexes)[0], body,
        (0, tf_ops.decoder_start(stream), tf.TensorArray(tf.int32, tf.shape(indexes)[0])))
    return out.stack(), tf_ops.decoder_finish(stream, state)

  stream = encode(indexes, values)
  assert stream.numpy() == _tfc_stream(model_tables["y"], indexes, values)
  decoded, complete = decode(stream, indexes)
  np.testing.assert_array_equal(decoded, values)
  assert complete.numpy()
  # Row 0's escape followed by zeros: tfc's decoder would hang here.
  start, precision, symbols = _rows(model_tables["y"])[0]
  low = (2**32 * int(model_tables["y"][start + symbols])) >> -precision
  message = _error(decode, low.to_bytes(4, "big"), np.zeros([1, 1, 8], np.int32))
  assert message.startswith("corrupt tflic file: y stream: "), message


def test_missing_library_is_one_line(tmp_path):
  with pytest.raises(errors.TflicError, match=r"are not built; run `pip install -e \.`$"):
    tf_ops._load(tmp_path / "_tf_ops.so")  # pylint: disable=protected-access
  (tmp_path / "broken.so").write_bytes(b"not a library")
  with pytest.raises(errors.TflicError, match="cannot load tflic's range coder ops"):
    tf_ops._load(tmp_path / "broken.so")  # pylint: disable=protected-access


_SOURCES = pathlib.Path("tflic/codec/rangecoder")  # the range coder's sources in a checkout


def _source_tree(root, **replaced):
  """A copy of what setup.py's build_ext needs (its C and C++ sources anywhere in tflic/),
  with some of the range coder's sources' text replaced."""
  root.mkdir(parents=True)
  for name in ("setup.py", "README.md"):
    shutil.copy(REPO / name, root / name)
  for source in (REPO / "tflic").rglob("*"):
    if source.suffix not in (".c", ".cc", ".h"):
      continue
    relative = source.relative_to(REPO)
    text = replaced.get(source.name, source.read_text()) if relative.parent == _SOURCES else (
        source.read_text())
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    (root / relative).write_text(text)
  return root / _SOURCES / "_tf_ops.so"


def test_an_editable_install_without_the_library_builds_it_on_first_load(tmp_path, capfd):
  # On a fresh machine pip builds tflic before it installs TensorFlow: no library yet.
  if not (REPO / "setup.py").is_file():
    pytest.skip("needs the source tree's setup.py (under Bazel, Bazel builds the ops)")
  library = _source_tree(tmp_path / "good")
  tf_ops._build_in_place(library)  # pylint: disable=protected-access
  assert library.read_bytes()[:4] == b"\x7fELF"
  assert "building the range coder's TensorFlow ops" in capfd.readouterr().err
  broken = _source_tree(tmp_path / "broken", **{"_tf_ops.cc": "not C++\n"})
  with pytest.raises(errors.TflicError,
                     match=r"^cannot build tflic's range coder ops \(_tf_ops.so\): .*; run "):
    tf_ops._build_in_place(broken)  # pylint: disable=protected-access
  assert not broken.exists()
  tf_ops._build_in_place(tmp_path / "wheel" / _SOURCES / "_tf_ops.so")  # pylint: disable=protected-access
  assert not (tmp_path / "wheel").exists()  # No setup.py: nothing to build with.


class _Coder(tf.Module):

  def __init__(self, table):
    super().__init__()
    self.table = tf.constant(table)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.int32)] * 2)
  def encode(self, indexes, values):
    return tf_ops.encode(indexes, values, self.table)

  @tf.function(input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([None], tf.int32)])
  def decode(self, stream, indexes):
    half = tf.size(indexes) // 2
    state, first = tf_ops.decode(stream, tf_ops.decoder_start(stream), indexes[:half],
                                 self.table, what="y stream")
    state, second = tf_ops.decode(stream, state, indexes[half:], self.table, what="y stream")
    return tf.concat([first, second], 0), tf_ops.decoder_finish(stream, state)


def test_saved_model_loads_in_a_fresh_process(tmp_path, model_tables):
  table = model_tables["indexed"]
  rng = np.random.default_rng(11)
  indexes = rng.integers(0, len(_rows(table)), 500).astype(np.int32)
  values = _values(rng, table, indexes)
  tf.saved_model.save(_Coder(table), str(tmp_path / "coder"))
  np.savez(tmp_path / "data.npz", indexes=indexes, values=values,
           stream=np.frombuffer(_tfc_stream(table, indexes, values), np.uint8))
  code = textwrap.dedent(f"""
      import numpy as np, tensorflow as tf
      import tflic.codec.rangecoder.tf_ops  # Registers the ops before loading.
      data = np.load({str(tmp_path / "data.npz")!r})
      coder = tf.saved_model.load({str(tmp_path / "coder")!r})
      stream = data["stream"].tobytes()
      assert coder.encode(data["indexes"], data["values"]).numpy() == stream
      values, complete = coder.decode(stream, data["indexes"])
      np.testing.assert_array_equal(values, data["values"])
      assert complete.numpy()
      try:
        coder.decode(b"\\xff\\xf0", [0])
        raise AssertionError("no error")
      except tf.errors.InvalidArgumentError as e:
        assert "corrupt tflic file: y stream: truncated" in e.message, e.message
      print("ok")
      """)
  result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
