"""Hostile .tflic files: the mutations tools/fuzz_decoder.py decodes (and the tests).

`mutate(rng, seeds)` turns one of some clean files into a hostile one, the ways an
attacker would: header bytes, header fields with the checksum recomputed, stream edits
with lengths and checksum fixed, zeroed or `ff f0` stream tails, empty and random
streams, spliced files and random bytes. No TensorFlow, no flags: importable anywhere.
"""

import struct
import zlib

HEADER = struct.Struct("<4sBB8sHHHIIQI")  # tflic.codec.bitstream.HEADER_FORMAT
# Kinds whose decoded image may legitimately differ from the clean one: a consistent
# header edit (size or quality, checksum recomputed) is a valid file.
HEADER_EDITS = ("header_fields", "declared_size", "splice")


def _unpack(data):
  fields = list(HEADER.unpack(data[:HEADER.size]))
  z_bytes, y_bytes = fields[7], fields[8]
  body = data[HEADER.size:]
  return fields, body[:z_bytes], body[z_bytes:z_bytes + y_bytes]


def _pack(fields, z, y, fix=True):
  """A file from header fields and streams; fix: lengths and checksum made consistent."""
  fields = list(fields)
  if fix:
    fields[7], fields[8], fields[10] = len(z), len(y), 0
  head = HEADER.pack(*fields)
  data = head + z + y
  if fix:
    checksum = zlib.adler32(data[:HEADER.size - 4] + data[HEADER.size:])
    data = data[:HEADER.size - 4] + struct.pack("<I", checksum) + data[HEADER.size:]
  return data


def _edit_stream(rng, stream, how):
  stream = bytearray(stream)
  if how == "bitflip" and stream:
    for _ in range(rng.randint(1, 4)):
      i = rng.randrange(len(stream))
      stream[i] ^= 1 << rng.randrange(8)
  elif how == "byteset" and stream:
    for _ in range(rng.randint(1, 4)):
      stream[rng.randrange(len(stream))] = rng.choice([0, 0xFF, rng.randrange(256)])
  elif how == "insert":
    i = rng.randint(0, len(stream))
    stream[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
  elif how == "delete" and stream:
    i = rng.randrange(len(stream))
    del stream[i:i + rng.randint(1, 16)]
  elif how == "truncate":
    del stream[rng.randint(0, len(stream)):]
  elif how == "zero_tail":
    i = rng.randint(0, len(stream))
    stream[i:] = bytes(len(stream) - i + rng.choice([0, 0, 4, 64]))
  elif how == "ff_f0_tail":  # an escape at the bottom of the interval, then zeros
    i = rng.randint(0, len(stream))
    stream[i:] = b"\xff\xf0"
  elif how == "garbage":
    stream = bytearray(rng.randrange(256) for _ in range(rng.choice([0, 1, 3, 17, 300])))
  elif how == "empty":
    stream = bytearray()
  return bytes(stream)


STREAM_EDITS = ("bitflip", "byteset", "insert", "delete", "truncate", "zero_tail",
                "ff_f0_tail", "garbage", "empty")
KINDS = (("stream:" + e) for e in STREAM_EDITS)
KINDS = tuple(KINDS) + ("stream_unfixed", "header_bytes", "header_fields", "declared_size",
                        "lengths", "splice", "random_bytes")


def mutate(rng, seeds):
  """(kind, seed index, hostile bytes, declared (height, width)) of one random mutation."""
  kind = rng.choice(KINDS)
  index = rng.randrange(len(seeds))
  fields, z, y = _unpack(seeds[index])
  if kind.startswith("stream:"):
    how = kind.split(":")[1]
    which = rng.choice("zyb")
    if which in "zb":
      z = _edit_stream(rng, z, how)
    if which in "yb":
      y = _edit_stream(rng, y, how)
    data = _pack(fields, z, y)
  elif kind == "stream_unfixed":
    data = bytearray(seeds[index])
    data[rng.randrange(HEADER.size, len(data))] ^= 1 << rng.randrange(8)
    data = bytes(data)
  elif kind == "header_bytes":
    data = bytearray(seeds[index])
    for _ in range(rng.randint(1, 3)):
      data[rng.randrange(HEADER.size)] = rng.randrange(256)
    data = bytes(data)
  elif kind == "header_fields":
    field = rng.choice([1, 2, 4, 5, 6, 9])  # version, flags, height, width, quality, check
    limit = {1: 255, 2: 255, 4: 65535, 5: 65535, 6: 65535, 9: 2**64 - 1}[field]
    fields[field] = rng.choice([0, 1, limit, rng.randint(0, limit)])
    data = _pack(fields, z, y)
  elif kind == "declared_size":
    # Mostly sizes that are refused or decode quickly; valid strips (slow to decode
    # by design: time grows with h + w) are rarer, to keep the run's length sane.
    draw = rng.random()
    if draw < 0.4:
      fields[4], fields[5] = rng.randint(1, 65535), rng.randint(1, 65535)
    elif draw < 0.7:
      fields[4] = max(1, fields[4] + rng.randint(-32, 32))
      fields[5] = max(1, fields[5] + rng.randint(-32, 32))
    elif draw < 0.9:
      fields[4], fields[5] = rng.randint(1, 1024), rng.randint(1, 1024)
    else:
      edges = [1, 2, 17, 255, 1024, 4096, 16384, 65535]
      fields[4], fields[5] = rng.choice(edges), rng.choice(edges)
    data = _pack(fields, z, y)
  elif kind == "lengths":
    fields[7 + rng.randrange(2)] = rng.choice([0, 2**32 - 1, rng.randrange(2**32)])
    data = bytearray(_pack(fields, z, y, fix=False))
    checksum = zlib.adler32(bytes(data[:HEADER.size - 4] + data[HEADER.size:]))
    data[HEADER.size - 4:HEADER.size] = struct.pack("<I", checksum)
    data = bytes(data)
  elif kind == "splice":
    other_fields, other_z, other_y = _unpack(seeds[rng.randrange(len(seeds))])
    data = _pack(fields, rng.choice([z, other_z]), rng.choice([y, other_y]))
  else:  # random_bytes
    data = bytes(rng.randrange(256) for _ in range(rng.choice([0, 5, 39, 40, 41, 100, 1000])))
    if rng.random() < 0.5:
      data = b"TFLC\x02" + data[5:]
  declared = (0, 0)
  if len(data) >= HEADER.size:
    declared = struct.unpack("<HH", data[14:18])
  return kind, index, data, declared
