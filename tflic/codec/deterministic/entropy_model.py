"""The integer entropy model: h_s and the context transformer on fixed-point tensors.

Inputs and outputs are integers at `layers.ACT_BITS` fractional bits (carried in
float64): z_hat = z_symbols * 2^ACT_BITS + z_offsets, y_hat = y_symbols * 2^ACT_BITS +
mean. `IntegerEntropyModel` bundles the numpy backend (`tflic.model.backends.NUMPY`) with the
parameters: the readable reference of the C core (tflic/codec/rangecoder/entropy_core.c), which
codes files and must give the same integers (tests/test_entropy_core.py).
"""

import numpy as np

from tflic.codec.deterministic import layers
from tflic.codec.deterministic import quantize
from tflic.model.coding_order import candidate_slots
from tflic.model.coding_order import window_offsets

ONE = 2**layers.ACT_BITS


def _gather(ops, grid, positions, offsets):
  """grid [B, h, w, C] at positions [n, 2] + offsets [s, 2] -> [B, n, s, C], zeros outside."""
  height, width = ops.dims(grid)[1:3]
  sources = positions[:, None, :] + offsets[None, :, :]  # [n, s, 2]
  inside = ((sources[..., 0] >= 0) & (sources[..., 0] < height) &
            (sources[..., 1] >= 0) & (sources[..., 1] < width))
  # Clipped indices and a select, not a padded copy of the grid: a coder gathers from
  # the whole latent at every step.
  indices = ops.clip_indices(sources, height - 1, width - 1)
  values = ops.gather_nd(ops.transpose(grid, [1, 2, 0, 3]), indices)  # [n, s, B, C]
  values = ops.where(inside[:, :, None, None], values, 0.0)
  return ops.transpose(values, [2, 0, 1, 3])


class IntegerEntropyModel:
  """h_s, context predictions and table indexes of one model on one backend.

  Args:
    ops: a backend from `tflic.model.backends` (NUMPY).
    params: {"hyper_synthesis", "context", "gelu", "exp", "thresholds", ...} as made by
      `quantize.network_params` and `quantize.libm_tables`, arrays as the backend's
      float64 tensors.
    window, num_groups, mode: the context window w, the number of channel groups K and
      the coding order.
  """

  def __init__(self, ops, params, window, num_groups, mode):
    self.ops = ops
    self.params = params
    self.window = window
    self.num_groups = num_groups
    self.slots = candidate_slots(window, mode)
    # Where in `slots` the targets' own position is (its tokens change between groups).
    self.own_slot = int(np.flatnonzero(np.all(window_offsets(window)[self.slots] == 0, -1))[0])
    # Mask columns of the candidate slots' chunks (groups fastest), then the hyper token.
    self.mask_columns = np.append(
        (self.slots[:, None] * num_groups + np.arange(num_groups)).ravel(),
        window * window * num_groups).astype(np.int32)
    self.tables = {"gelu": params["gelu"], "exp": params["exp"]}

  def hyper_features(self, z_hat, latent_height, latent_width):
    """h_s(z_hat) [B, hz, wz, Cz] -> hyperprior features [B, h, w, D]."""
    ops, p = self.ops, self.params["hyper_synthesis"]
    if "layers" in p:  # transform "cnn" (quantize.conv_hyper_synthesis)
      x = layers.conv_stack(ops, p["layers"], z_hat)
    else:
      x = layers.patch_split(ops, p["resample0"], z_hat)
      for block in p["blocks"]:
        x = layers.swin_block(ops, block, self.tables, x)
      x = layers.patch_split(ops, p["resample1"], x)
    return x[:, :latent_height, :latent_width]

  def context(self, y_hat, positions, hyper_tokens, slots=None):
    """Keys and values of the context tokens of target chunks at `positions`.

    Args:
      y_hat: [B, h, w, M] as integers.
      positions: int32 [n, 2].
      hyper_tokens: the targets' `hyper_tokens`, the last context token.
      slots: int positions in `self.slots` of the window slots to compute, without the
        hyperprior token (for `update_context`); None: every slot, then the hyper token.

    Returns:
      A list with each block's keys and values [B, n, t, 2 dim], tokens in mask-column
      order (slots, groups fastest; the hyper token last).
    """
    ops, p = self.ops, self.params["context"]
    k = self.num_groups
    c = y_hat.shape[-1] // k
    chosen = self.slots if slots is None else self.slots[slots]
    chunks = _gather(ops, y_hat, positions, window_offsets(self.window)[chosen])
    b, n, s, _ = ops.dims(chunks)
    chunks = ops.reshape(chunks, [b, n, s, k, c])
    tokens = (layers.dense(ops, p["chunk_embed"], chunks) + p["group_embedding"] +
              ops.gather_rows(p["slot_embedding"], chosen)[:, None, :])  # [B, n, s, K, D]
    tokens = ops.reshape(layers.clamp(ops, tokens), [b, n, s * k, tokens.shape[-1]])
    if slots is None:
      tokens = ops.concat([tokens, hyper_tokens], 2)
    # Per-token normalization: normalizing a subset of the tokens gives the same integers.
    normed = layers.normalize(ops, tokens, p["context_eps"])
    return [layers.context_key_value(ops, block, normed) for block in p["blocks"]]

  def update_context(self, key_values, y_hat, positions, slot):
    """The context of `context` with one slot's tokens recomputed from y_hat (numpy).

    A coder that has filled in more groups at the targets' own positions refreshes that
    slot only: the other tokens are unchanged.
    """
    fresh = self.context(y_hat, positions, None, np.array([slot]))
    k = self.num_groups
    updated = []
    for key_value, new in zip(key_values, fresh):
      key_value = key_value.copy()
      key_value[:, :, slot * k:(slot + 1) * k] = new
      updated.append(key_value)
    return updated

  def hyper_tokens(self, hyper, positions):
    """The hyperprior token [B, n, 1, dim] of targets at `positions` (hyper [B, h, w, D])."""
    return layers.dense(self.ops, self.params["context"]["hyper_embed"], _gather(
        self.ops, hyper, positions, np.zeros([1, 2], np.int32)))  # [B, n, 1, dim]

  def predict(self, y_hat, hyper, positions, groups, mask, cached=None):
    """(mean, log_scale) [B, n, q, M / K] of chunks (positions x groups).

    y_hat [B, h, w, M] and hyper [B, h, w, D] as integers; positions int32 [n, 2];
    groups int32 [q]; mask bool [n, q, w * w * K + 1]: which window chunks (slots
    row-major, groups fastest) and, last, the hyperprior token each target sees.
    cached: (`context`, `hyper_tokens`) of the targets, if the caller has them (None:
      computed here).
    """
    ops, p = self.ops, self.params["context"]
    if cached is None:
      hyper_tokens = self.hyper_tokens(hyper, positions)
      key_values = self.context(y_hat, positions, hyper_tokens)
    else:
      key_values, hyper_tokens = cached
    queries = layers.clamp(ops, hyper_tokens + ops.gather_rows(p["query_embedding"], groups))
    mask = ops.take_last(mask, self.mask_columns)
    for block, key_value in zip(p["blocks"], key_values):
      queries = layers.cross_attention_block(ops, block, self.tables, queries, key_value,
                                             mask)
    c = y_hat.shape[-1] // self.num_groups
    normed = layers.layer_norm(ops, p["head_norm"], queries)
    head = p["head"]
    out = (ops.einsum("bnqd,qdc->bnqc", normed, ops.gather_rows(head["w"], groups)) +
           ops.gather_rows(head["b"], groups))
    out = layers.clamp(ops, layers.unscale_round(ops, out,
                                                 ops.gather_rows(head["unscale"], groups)))
    return out[..., :c], out[..., c:]

  def table_index(self, log_scale):
    """Coding-table index of integer log-scales (float64, integer-valued)."""
    ops = self.ops
    above = ops.where(log_scale[..., None] >= self.params["thresholds"], 1.0, 0.0)
    return ops.reduce_sum(above, -1)


def flatten(tree, prefix=""):
  """{"a/b/0/w": array or int} from nested dicts and lists."""
  if isinstance(tree, dict):
    items = tree.items()
  elif isinstance(tree, list):
    items = ((str(i), v) for i, v in enumerate(tree))
  else:
    return {prefix[:-1]: tree}
  flat = {}
  for key, value in items:
    flat.update(flatten(value, f"{prefix}{key}/"))
  return flat


def unflatten(flat):
  """Inverse of `flatten` (lists come back from all-digit keys)."""
  tree = {}
  for key, value in flat.items():
    node = tree
    *parents, leaf = key.split("/")
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value

  def listify(node):
    if not isinstance(node, dict):
      return node
    node = {k: listify(v) for k, v in node.items()}
    if node and all(k.isdigit() for k in node):
      return [node[str(i)] for i in range(len(node))]
    return node
  return listify(tree)


def split_arrays(flat):
  """(arrays, statics): the numpy arrays of a flat tree and its Python numbers."""
  arrays = {k: v for k, v in flat.items() if isinstance(v, np.ndarray)}
  return arrays, {k: v for k, v in flat.items() if k not in arrays}


def integer_params(model, libm_tables=None):
  """The complete flat integer parameters of a TflicModel (numpy / Python numbers)."""
  tree = quantize.network_params(model)
  tree.update(libm_tables if libm_tables is not None else quantize.libm_tables(model.config))
  return flatten(tree)
