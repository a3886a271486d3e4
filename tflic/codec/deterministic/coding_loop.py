"""The codec's entropy coding in numpy: the readable reference of the C entropy core.

Every encoder and decoder codes with `tflic/codec/rangecoder/entropy_core.c`; the tests hold it
to this implementation. `encode` and `decode` run the same coding loop:
z's symbols with the factorized prior, then y chunk step by chunk step in coding order,
each step's means and coding tables from the integer entropy model (`Reference`, numpy).
The integers are exact, so the streams are byte-identical to the SavedModel's and a file
from either decodes with the other.
"""

import numpy as np

from tflic.codec import bitstream
from tflic.codec.deterministic import entropy_model
from tflic.codec.deterministic import latent_check
from tflic.codec.deterministic import reference as reference_lib
from tflic.codec import rangecoder
from tflic import errors
from tflic.model import backends
from tflic.model import coding_order

SYMBOL_LIMIT = 1 << 20  # as tflic.codec: symbols beyond are clamped
_ONE = float(entropy_model.ONE)


def coding_steps(height, width, num_groups, mode):
  """The chunks of every coding step, in order: a list of (positions int32 [n, 2], group)
  (`tflic.model.coding_order.step_chunks` on numpy)."""
  steps = []
  for step in range(coding_order.num_steps(height, width, num_groups, mode)):
    positions, group = coding_order.step_chunks(step, height, width, num_groups, mode,
                                                ops=backends.NUMPY)
    steps.append((positions.astype(np.int32), int(group)))
  return steps


def coding_loop(reference, hyper, height, width, step_fn):
  """Runs the context model over a latent grid in coding order.

  Args:
    reference: the model's `tflic.codec.deterministic.reference.Reference`.
    hyper: the integer hyperprior features [1, h, w, D].
    height, width: the latent grid (h, w).
    step_fn: `(positions [n, 2], group, mean [n, c], table_index [n, c]) -> symbols
      [n, c]`: codes one step's chunks and returns their symbols.

  Returns:
    The integer latent y_hat [1, h, w, M] (float64).
  """
  k, m = int(reference.num_groups), int(reference.latent_channels)
  c = m // k
  mask = reference_lib.context_mask(height, width, k, int(reference.window), reference.mode)
  mask = np.concatenate([mask, np.ones_like(mask[..., :1])], -1)  # hyper always visible
  y_hat = np.zeros([1, height, width, m], np.float64)
  model = reference.model
  for positions, group in coding_steps(height, width, k, reference.mode):
    rows = positions[:, 0] * width + positions[:, 1]
    # The groups of a position are coded in consecutive steps; between them only the
    # tokens of the own position change, so the rest of the context is computed once.
    if group == 0:
      hyper_tokens = model.hyper_tokens(hyper, positions)
      key_values = model.context(y_hat, positions, hyper_tokens)
    else:
      key_values = model.update_context(key_values, y_hat, positions, model.own_slot)
    mean, log_scale = model.predict(y_hat, hyper, positions, np.array([group], np.int32),
                                    mask[rows][:, group:group + 1], (key_values, hyper_tokens))
    mean, log_scale = mean[0, :, 0], log_scale[0, :, 0]
    symbols = step_fn(positions, group, mean, model.table_index(log_scale).astype(np.int32))
    y_hat[0, positions[:, 0], positions[:, 1], group * c:(group + 1) * c] = (
        symbols * _ONE + mean)
  return y_hat


def _hyper(reference, z_symbols, height, width):
  z_hat = z_symbols.astype(np.float64) * _ONE + reference.tables["tables/z_offset"]
  return reference.model.hyper_features(z_hat, height, width)


def encode(reference, y, z):
  """Entropy-codes an encoder's latents: (z_stream, y_stream, latent_check).

  y: the gained latent float32 [1, h, w, M]; z: the hyper latent float32 [1, hz, wz, C]
  (both as the model's analysis computes them; `tflic.codec.CodecModule._quantize` is
  the in-graph twin).
  """
  y = np.asarray(y, np.float32)
  z = np.asarray(z, np.float32)
  if not (np.all(np.isfinite(y)) and np.all(np.isfinite(z))):
    raise errors.TflicError("the model produced non-finite latents")
  tables = reference.tables
  z = np.clip(z, -SYMBOL_LIMIT, SYMBOL_LIMIT).astype(np.float64)
  z_symbols = np.round(z - tables["tables/z_offset"] / _ONE).astype(np.int32)
  z_encoder = rangecoder.Encoder(tables["tables/z_cdf"])
  z_encoder.encode_channel(z_symbols.reshape(-1, z_symbols.shape[-1]) -
                           tables["tables/z_cdf_offset"])
  _, height, width, _ = y.shape
  c = y.shape[-1] // int(reference.num_groups)
  y = y.astype(np.float64)
  y_encoder = rangecoder.Encoder(tables["tables/y_cdf"])
  y_offset = tables["tables/y_cdf_offset"]

  def encode_step(positions, group, mean, index):
    values = y[0, positions[:, 0], positions[:, 1], group * c:(group + 1) * c] - mean / _ONE
    symbols = np.clip(np.round(values), -SYMBOL_LIMIT, SYMBOL_LIMIT).astype(np.int32)
    y_encoder.encode_index(index, symbols - y_offset[index])
    return symbols

  y_hat = coding_loop(reference, _hyper(reference, z_symbols, height, width), height, width,
                      encode_step)
  z_stream = _padded(z_encoder.finish(), z_symbols.size, tables["tables/z_cdf"])
  y_stream = _padded(y_encoder.finish(), y_hat.size, tables["tables/y_cdf"])
  return z_stream, y_stream, latent_check.numpy_check(z_symbols, y_hat)


def _padded(stream, num_symbols, cdf_table):
  """The stream padded with zero bytes to the length the format requires
  (`bitstream.min_stream_bytes`, as tflic.codec pads)."""
  missing = bitstream.min_stream_bytes(num_symbols, bitstream.symbol_cost(cdf_table))
  return stream + bytes(max(0, missing - len(stream)))


def decode(reference, z_stream, y_stream, height, width, check):
  """Decodes a file's streams to the integer latent y_hat [1, h, w, M] (float64).

  height, width: the image size from the header; check: its latent check. Raises
  TflicError if a stream is corrupt or the decoded latents fail the check (a desync).
  """
  tables = reference.tables
  latent_height, latent_width = bitstream.latent_grid(height, width)
  hz, wz = bitstream.hyper_grid(height, width)
  channels = int(reference.hyper_channels)
  try:
    z_decoder = rangecoder.Decoder(z_stream, tables["tables/z_cdf"])
    z_symbols = z_decoder.decode_channel([hz * wz, channels])
    if not z_decoder.finish():
      raise errors.TflicError("corrupt tflic file: z stream ends early")
    z_symbols = (z_symbols + tables["tables/z_cdf_offset"]).reshape(1, hz, wz, channels)
    y_decoder = rangecoder.Decoder(y_stream, tables["tables/y_cdf"])
    y_offset = tables["tables/y_cdf_offset"]

    def decode_step(positions, group, mean, index):
      del positions, group, mean
      return y_decoder.decode_index(index) + y_offset[index]

    y_hat = coding_loop(reference, _hyper(reference, z_symbols, latent_height, latent_width),
                        latent_height, latent_width, decode_step)
  except rangecoder.RangeCoderError as e:
    raise errors.TflicError(f"corrupt tflic file: {e}") from None
  if latent_check.numpy_check(z_symbols, y_hat) != check:
    raise errors.TflicError(bitstream.DESYNC_MESSAGE)
  if not y_decoder.finish():
    raise errors.TflicError("corrupt tflic file: y stream ends early")
  return y_hat

