"""Hostile files (a fast subset of tools/fuzz_decoder.py): decoders refuse declared
sizes their streams cannot hold before any allocation, never hang in the range decoder,
and never return another image than the encoder's without an error."""

import pathlib
import random
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tflic.codec import bitstream
from tflic.codec import tf_codec
from tflic import errors
from tflic.lite import decoder as decoder_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import hostile_files  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope="module")
def saved_codec(tiny_codec):
  return tiny_codec


@pytest.fixture(scope="module")
def seeds(saved_codec, kodak_dir):
  """Clean files of the tiny model: {name: bytes}."""
  photo = np.asarray(Image.open(kodak_dir / "kodim05.png").convert("RGB"))
  return {(h, w, q): saved_codec.compress(photo[:h, :w], q)
          for h, w in ((16, 16), (48, 32)) for q in (0.0, 1.0)}


def _file(seed, height=None, width=None, z=None, y=None):
  header, z_stream, y_stream = bitstream.unpack(seed)
  return bitstream.pack(header.mode, header.fingerprint, height or header.height,
                        width or header.width, header.quality_code,
                        z_stream if z is None else z, y_stream if y is None else y,
                        header.latent_check)


def _graph_error(module, data):
  """The one-line error of the SavedModel's own decompress graph (no Python checks)."""
  with pytest.raises(tf.errors.OpError) as info:
    module.decompress(tf.constant(data))
  return tf_codec._first_line(info.value)  # pylint: disable=protected-access


def test_declared_size_is_bounded_by_the_streams(saved_codec, seeds):
  seed = seeds[(16, 16, 0.0)]
  header = bitstream.unpack(seed)[0]
  big = _file(seed, 4096, 4096)
  # 4096 x 4096 needs 65,536 x M y symbols: more than a few bytes can hold.
  with pytest.raises(errors.TflicError, match="cannot hold"):
    bitstream.check_declared_size(bitstream.unpack(big)[0], 16, 8, (3, 12), (3, 12),
                                  1 << 30)
  assert "too short for the image size" in _graph_error(saved_codec.module, big)
  assert "pixel limit" in _graph_error(saved_codec.module, _file(seed, 60993, 52978))
  assert "shorter than a header" in _graph_error(saved_codec.module, b"\xff" * 33)
  with pytest.raises(errors.TflicError, match="exceeds the limit of 255"):
    saved_codec.decompress(seed, max_pixels=header.height * header.width - 1)


def test_the_rule_and_the_padding_agree():
  cost = (3, 12)
  for symbols in (0, 1, 1000, 10**6, 12345678):
    need = bitstream.min_stream_bytes(symbols, cost)
    assert bitstream.stream_holds(symbols, need, cost)
    if need:
      assert not bitstream.stream_holds(symbols, need - 1, cost)


def test_streams_padded_with_zeros_decode_the_same(saved_codec, seeds, tiny_lite_dir):
  """The encoder pads a stream shorter than the rule allows with zero bytes; both
  decoders read such streams back to the same image and latents."""
  lite = decoder_lib.Decoder(str(tiny_lite_dir))
  for seed in seeds.values():
    header, z, y = bitstream.unpack(seed)
    # The encoder (the C core) met the rule: small images' streams are padded to it.
    h, w = bitstream.latent_grid(header.height, header.width)
    hz, wz = bitstream.hyper_grid(header.height, header.width)
    assert len(z) >= bitstream.min_stream_bytes(hz * wz * lite.core.hyper_channels,
                                                lite.core.z_cost)
    assert len(y) >= bitstream.min_stream_bytes(h * w * lite.core.latent_channels,
                                                lite.core.y_cost)
    data = _file(seed, z=z + bytes(5), y=y + bytes(40))
    np.testing.assert_array_equal(saved_codec.decompress(data), saved_codec.decompress(seed))
    np.testing.assert_array_equal(lite.decode_latent(data)[1], lite.decode_latent(seed)[1])
    with pytest.raises(errors.TflicError, match="ends early|latents differ"):  # not zeros
      saved_codec.decompress(_file(seed, y=y + b"\x00\x01"))


@pytest.mark.parametrize("decoder", ["savedmodel", "lite"])
def test_mutated_files_are_errors_or_the_clean_image(decoder, saved_codec, seeds,
                                                     tiny_lite_dir):
  """120 hostile files of every kind the fuzzer makes: each is a one-line error, the
  clean image (a mutation the decoder never reads) or a consistent header edit."""
  if decoder == "lite":
    lite = decoder_lib.Decoder(str(tiny_lite_dir))
    decode = lambda data: lite.decompress(data, max_pixels=1 << 16)
  else:
    decode = lambda data: saved_codec.decompress(data, max_pixels=1 << 16)
  clean = [decode(seed) for seed in seeds.values()]
  rng = random.Random(1)
  kinds = set()
  for _ in range(120):
    kind, index, data, _ = hostile_files.mutate(rng, list(seeds.values()))
    kinds.add(kind)
    start = time.perf_counter()
    try:
      image = decode(data)
    except errors.TflicError as e:
      assert str(e) and "\n" not in str(e)
    else:
      same = image.shape == clean[index].shape and np.array_equal(image, clean[index])
      assert same or kind in hostile_files.HEADER_EDITS, kind
    # Generous (a shared CPU): a hang would be minutes; a clean decode here is ~0.1 s.
    assert time.perf_counter() - start < 30, kind
  assert len(kinds) >= 12


def test_escape_prefix_streams_do_not_hang(saved_codec, seeds):
  """The streams on which tfc's decoder spins forever (an escape, then zeros) are errors
  or decode; the y stream's tail replaced by ff f0 and by zeros, at every offset."""
  seed = seeds[(48, 32, 1.0)]
  _, _, y = bitstream.unpack(seed)
  for cut in range(0, len(y), max(1, len(y) // 12)):
    for tail in (b"\xff\xf0", bytes(8)):
      start = time.perf_counter()
      try:
        saved_codec.decompress(_file(seed, y=y[:cut] + tail))
      except errors.TflicError:
        pass
      assert time.perf_counter() - start < 30
