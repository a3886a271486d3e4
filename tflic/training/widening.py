"""Function-preserving widening of the Swin transforms (Net2Net's wider nets, for Swin).

A model whose analysis and synthesis stages are k times wider than a trained one (k a
whole number per stage, with k times the heads of the same head width) starts out
computing what the trained one does: each channel of a stage is repeated k times, each
head too, and every weight that reads the repeated channels is split among the copies in
random shares that sum to one. The copies are equal at the start, so the output is the
same up to float rounding (LayerNorm sees each value k times: same mean and variance).
The unequal shares give the copies different gradients, so training can make them differ;
Net2Net (Chen et al., 2016) breaks the symmetry with noise instead, which changes the
function. The latent (M), hyperprior and context model keep their widths and weights.
"""

import numpy as np
import tensorflow as tf

from tflic import errors
from tflic.model.layers import PatchMerging, PatchSplit, SwinBlock

TRANSFORMS = ("analysis", "synthesis")


def is_wider(source_config, config):
  """Whether the transforms' widths differ: a widening, or a misfit that
  `widen_transforms` refuses."""
  return tuple(source_config.embed_dims) != tuple(config.embed_dims)


def _factor(new, old, what):
  if old <= 0 or new % old:
    raise errors.TflicError(f"{what}: {new} channels are not a whole multiple of {old}")
  return new // old


def _tile(w, axis, k):
  return np.concatenate([w] * k, axis=axis) if k > 1 else w


def _split(w, axis, k, rng):
  """Tiles `axis` k times, each copy a random share of `w` (shares sum to 1 per entry)."""
  if k == 1:
    return w
  shares = rng.uniform(0.5, 1.5, size=(k,) + w.shape)
  shares /= shares.sum(axis=0)
  return np.concatenate([s * w for s in shares], axis=axis)


def _assign(dst, value, what):
  if tuple(dst.shape) != value.shape:
    raise errors.TflicError(f"{what}: cannot map a {value.shape} weight onto {dst.shape}")
  dst.assign(value.astype(dst.dtype.as_numpy_dtype))


def _widen_linear(src, dst, rng, k_in, k_out, what, in_groups=1, out_groups=1):
  """A Dense or Conv2D whose input channels come in `in_groups` blocks (patch positions
  of a space-to-depth) and whose outputs in `out_groups` blocks (of a depth-to-space)."""
  kernel = src.kernel.numpy()
  lead = kernel.shape[:-2]
  cin, cout = kernel.shape[-2] // in_groups, kernel.shape[-1] // out_groups
  view = lead + (in_groups, cin, out_groups, cout)
  widened = _split(_tile(kernel.reshape(view), -1, k_out), -3, k_in, rng)
  _assign(dst.kernel, widened.reshape(lead + (in_groups * cin * k_in, out_groups * cout * k_out)),
          what)
  if src.bias is not None:
    bias = src.bias.numpy().reshape(out_groups, cout)
    _assign(dst.bias, _tile(bias, -1, k_out).reshape(-1), what)


def _widen_norm(src, dst, k, what, groups=1):
  for s, d in ((src.gamma, dst.gamma), (src.beta, dst.beta)):
    _assign(d, _tile(s.numpy().reshape(groups, -1), -1, k).reshape(-1), what)


def _widen_block(src, dst, rng, what):
  k = _factor(dst.dim, src.dim, what)
  if dst.num_heads != k * src.num_heads:
    raise errors.TflicError(f"{what}: {k}x the width needs {k * src.num_heads} heads "
                            f"(the same head width), not {dst.num_heads}")
  _widen_norm(src.norm1, dst.norm1, k, what)
  _widen_norm(src.norm2, dst.norm2, k, what)
  # qkv's outputs are [3, heads, head_dim]: repeat whole heads, not channels within one.
  heads, head_dim = src.num_heads, src.dim // src.num_heads
  qkv = src.attn.qkv.kernel.numpy().reshape(src.dim, 3, heads, head_dim)
  qkv = _split(_tile(qkv, 2, k), 0, k, rng)
  _assign(dst.attn.qkv.kernel, qkv.reshape(k * src.dim, 3 * k * src.dim), what)
  if src.attn.qkv.bias is not None:
    bias = src.attn.qkv.bias.numpy().reshape(3, heads, head_dim)
    _assign(dst.attn.qkv.bias, _tile(bias, 1, k).reshape(-1), what)
  _assign(dst.attn.relative_position_bias_table,
          _tile(src.attn.relative_position_bias_table.numpy(), 1, k), what)
  _widen_linear(src.attn.proj, dst.attn.proj, rng, k, k, what)
  hidden, out = src.mlp.layers
  _widen_linear(hidden, dst.mlp.layers[0], rng, k, k, what)
  _widen_linear(out, dst.mlp.layers[1], rng, k, k, what)


def _in_out(src_kernel, dst_kernel, what):
  return (_factor(dst_kernel.shape[-2], src_kernel.shape[-2], what),
          _factor(dst_kernel.shape[-1], src_kernel.shape[-1], what))


def _widen_layer(src, dst, rng, what):
  """Maps one layer of a transform's Stack onto its wider counterpart."""
  if type(src) is not type(dst):
    raise errors.TflicError(f"{what}: a {type(src).__name__} cannot become a "
                            f"{type(dst).__name__}")
  if isinstance(src, SwinBlock):
    _widen_block(src, dst, rng, what)
  elif isinstance(src, PatchMerging):
    # Space-to-depth puts the 4 positions of a patch first: repeat channels within each.
    groups = 1 if src.kernel_size else 4
    k_in, k_out = _in_out(src.reduction.kernel, dst.reduction.kernel, what)
    if src.norm is not None:
      _widen_norm(src.norm, dst.norm, k_in, what, groups)
    _widen_linear(src.reduction, dst.reduction, rng, k_in, k_out, what, in_groups=groups)
  elif isinstance(src, PatchSplit):
    # Depth-to-space takes the 4 positions of a patch from the outputs' first axis.
    k_in = _factor(dst.expansion.kernel.shape[-2], src.expansion.kernel.shape[-2], what)
    k_out = _factor(dst.out_dim, src.out_dim, what)
    if src.norm is not None:
      _widen_norm(src.norm, dst.norm, k_in, what)
    _widen_linear(src.expansion, dst.expansion, rng, k_in, k_out, what, out_groups=4)
  elif isinstance(src, tf.keras.layers.Dense):  # to or from the latent
    k_in, k_out = _in_out(src.kernel, dst.kernel, what)
    _widen_linear(src, dst, rng, k_in, k_out, what)
  else:
    raise errors.TflicError(f"{what}: cannot widen a {type(src).__name__}")


def widen_transforms(source, model, rng):
  """Sets `model`'s analysis and synthesis to the widened ones of `source`.

  The two models' transforms must have the same layers, every stage of `model` a whole
  multiple of the source's width; blocks that `model` appends (`latent_depth`) start as
  the identity. Raises TflicError where they do not fit.

  Returns:
    The number of such new blocks.
  """
  new = 0
  for name in TRANSFORMS:
    source_layers = getattr(source, name).layers
    layers = getattr(model, name).layers
    if len(layers) < len(source_layers):
      raise errors.TflicError(f"{name}: {len(source_layers)} layers do not fit in "
                              f"{len(layers)}")
    for i, (src, dst) in enumerate(zip(source_layers, layers)):
      _widen_layer(src, dst, rng, f"{name} layer {i} ({dst.name})")
    for dst in layers[len(source_layers):]:
      if not isinstance(dst, SwinBlock):
        raise errors.TflicError(f"{name}: the source lacks {dst.name}")
      dst.make_identity()
      new += 1
  return new
