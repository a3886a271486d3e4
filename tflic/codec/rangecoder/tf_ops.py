"""The C range coder (range_coder.h) as TensorFlow ops, for graphs and SavedModels.

Drop-in for tfc's range coding ops with `tfc.create_range_encoder([], table)`
(one stream): `encode` writes exactly tfc's bytes; `decoder_start`, `decode` and
`decoder_finish` read them like `tfc.create_range_decoder`,
`tfc.entropy_decode_index` and `tfc.entropy_decode_finalize`. tfc's
`entropy_decode_channel(handle, [n, C])` is `decode` with
`indexes = tf.broadcast_to(tf.range(C), [n, C])` when the table has C rows.

Unlike tfc's ops these are pure functions of their inputs: the decoder state is
an int64[5] tensor threaded from call to call (no variant handles), so they run
in tf.while_loop and tf.function and are saved in SavedModels like stock ops.
Decoding takes bounded time per value on any stream, and a corrupt stream fails
with a one-line InvalidArgumentError "corrupt tflic file: <what>: ..." instead
of hanging (see range_coder.h for exactly which streams fail).

Importing this module loads the op library, which `pip install -e .` builds:
import it before `tf.saved_model.load` of a model that uses these ops. On a fresh
machine pip builds the package before it installs TensorFlow, so the first
`pip install -e .` cannot build the ops; the first import then builds them with the
source tree's setup.py (a few seconds, once).
`tflic.codec.rangecoder` itself imports no TensorFlow; this module does.
"""

import fcntl
import pathlib
import subprocess
import sys

import tensorflow as tf

from tflic import errors

# absolute(), not resolve(): from a Bazel runfiles tree this is the _tf_ops.so that Bazel
# built (a symlink beside this file), not the one in the source tree.
LIBRARY = pathlib.Path(__file__).absolute().parent / "_tf_ops.so"

# Length of the decoder state vector (position, interval low and range - 1,
# code, status).
STATE_SIZE = 5


def _build_in_place(path):
  """Builds the missing library at `path` with the source tree's setup.py, if there is one.

  An editable install keeps its sources; a wheel (no setup.py above `tflic/`) does not and
  is left to the caller's error. A lock keeps concurrent first imports (pytest -n 2) from
  loading a half-written library.
  """
  source_root = path.parents[3]  # ROOT/tflic/codec/rangecoder/_tf_ops.so
  if not (source_root / "setup.py").is_file():
    return
  with open(path.parent / ".tf_ops.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if path.is_file():  # Another process built it while this one waited.
      return
    print(f"tflic: building the range coder's TensorFlow ops ({path.name}) for this "
          "TensorFlow, once", file=sys.stderr)
    result = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
                            cwd=source_root, capture_output=True, text=True, check=False)
    if result.returncode != 0:
      lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
      raise errors.TflicError(f"cannot build tflic's range coder ops ({path.name}): "
                              f"{lines[-1]}; run `pip install -e .`")


def _load(path):
  """The op module of the library at `path`, built first if an editable install lacks it.

  TflicError if it is missing (and cannot be built) or unloadable.
  """
  if not path.is_file():
    _build_in_place(path)
  if not path.is_file():
    raise errors.TflicError(f"tflic's range coder ops ({path}) are not built; "
                            "run `pip install -e .`")
  try:
    return tf.load_op_library(str(path))
  except (tf.errors.OpError, OSError) as e:
    reason = (getattr(e, "message", None) or str(e)).strip().splitlines()[0]
    raise errors.TflicError(f"cannot load tflic's range coder ops ({path.name}): {reason}; "
                            "rebuild them with `pip install -e .`") from None


_ops = _load(LIBRARY)


def encode(indexes, values, table, what="stream", name=None):
  """Range-codes `values` with table rows `indexes`: a scalar tf.string.

  indexes, values: int32 tensors of one shape, coded in row-major order.
  table: int32 lookup table, rank 1 or 2, as tfc's entropy models build it.
  The stream is byte-identical to tfc.create_range_encoder([], table) +
  tfc.entropy_encode_index(handle, indexes, values) + tfc.entropy_encode_finalize.
  Raises InvalidArgumentError ("<what>: ...") for a malformed table, an index
  that is not a row, or a value its row cannot code (tfc's encoder would hang
  or write wrong bytes for some of these).
  """
  return _ops.tflic_range_encode(indexes, values, table, what=what, name=name)


def decoder_start(stream, name=None):
  """The state of a decoder at the start of scalar tf.string `stream` (int64[5])."""
  return _ops.tflic_range_decoder_start(stream, name=name)


def decode(stream, state, indexes, table, what="stream", name=None):
  """Decodes one value per entry of int32 `indexes` (row-major): (new state, values).

  Like tfc.entropy_decode_index; `values` is int32 of the shape of `indexes`.
  Pass the same `stream` and `table` to every call and the previous call's
  state; several calls decode what one call over all their indexes would.
  Raises InvalidArgumentError, one line prefixed by `what` (e.g. "y stream"):
  "corrupt tflic file: <what>: ..." for a corrupt stream or an index that is not
  a row, "<what>: ..." for a malformed table or state.
  """
  result = _ops.tflic_range_decode(stream, state, indexes, table, what=what, name=name)
  return result.new_state, result.values


def decoder_finish(stream, state, name=None):
  """Whether decoding consumed `stream` exactly (scalar bool), like tfc.entropy_decode_finalize.

  False proves a mismatch (a corrupt or truncated stream, or too few values
  decoded); True is likely but no proof of success: a stream's length must be
  checked by its container. rc_decoder_finish in range_coder.h has the details.
  """
  return _ops.tflic_range_decoder_finish(stream, state, name=name)


def core_encode(model, y, z, name=None):
  """Entropy-codes an encoder's latents with the C core (entropy_core.h), in one op.

  model: scalar tf.string, a blob of `tflic.codec.rangecoder.entropy_core.model_blob`;
  y: float32 [1, h, w, M], the gained latent; z: float32 [1, hz, wz, C], its hyper
  latent. Returns (z_stream, y_stream, latent_check int64 (the uint64 bits), z_symbols
  int32 [1, hz, wz, C], y_hat float64 [1, h, w, M]); the streams are padded to the
  stream-length rule. Non-finite latents fail with InvalidArgumentError.
  """
  result = _ops.tflic_core_encode(model, y, z, name=name)
  return (result.z_stream, result.y_stream, result.latent_check, result.z_symbols,
          result.y_hat)


def core_decode(model, z_stream, y_stream, height, width, latent_check, max_pixels=0,
                flip_step=-1, name=None):
  """Decodes a file's streams with the C core: (z_symbols, y_hat) as `core_encode`'s.

  height, width: the image size (int32 scalars); latent_check: the header's (int64).
  A corrupt stream, a desync or a size over max_pixels (0: none) or beyond what the
  streams can hold fails with a one-line InvalidArgumentError, the sizes checked before
  any allocation. flip_step >= 0 is a test hook: the decoder of a drifted model.
  """
  result = _ops.tflic_core_decode(model, z_stream, y_stream, height, width, latent_check,
                                  max_pixels=max_pixels, flip_step=flip_step, name=name)
  return result.z_symbols, result.y_hat
