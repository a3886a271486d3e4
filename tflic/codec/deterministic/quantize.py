"""Integer parameters of the entropy model's networks, from a trained float TflicModel.

Weights are rounded to integers with a power-of-two scale per tensor (`quantize_weight`):
exact float64 arithmetic on the float32 weights, so the same checkpoint always gives the
same integers. The nonlinearity tables and the scale-index thresholds come from libm
(`math.erf`, `math.exp`, `math.log`) and are stored with the model, never recomputed by a
decoder.
"""

import math

import numpy as np

from tflic.codec.deterministic import layers

MAX_WEIGHT_SHIFT = 24


def quantize_weight(w):
  """(integer array, shift) with w ~ integers / 2^shift and |integers| <= 2^WEIGHT_BITS."""
  w = np.asarray(w, np.float64)
  shift = int(column_shifts(w.reshape(-1, 1))[0])  # the whole tensor as one column
  return np.round(w * 2.0**shift), shift


def activation(x):
  """A constant added to activations (embeddings), at ACT_BITS."""
  return np.round(np.asarray(x, np.float64) * 2.0**layers.ACT_BITS)


def column_shifts(w):
  """Per output column (last axis) shift with |w * 2^shift| <= 2^WEIGHT_BITS."""
  largest = np.max(np.abs(np.asarray(w, np.float64)), axis=-2)
  exponents = np.frexp(largest)[1]
  return np.where(largest == 0.0, MAX_WEIGHT_SHIFT,
                  np.minimum(MAX_WEIGHT_SHIFT, layers.WEIGHT_BITS - exponents))


def dense(kernel, bias=None, column_scale=None):
  """Params of a linear layer [.., n, m] with one power-of-two scale per output column.

  `column_scale` [m] is folded into kernel and bias first (e.g. attention's 1/sqrt(d)).
  "unscale" holds 2^-shift per column: multiplying by it is exact.
  """
  kernel = np.asarray(kernel, np.float64)
  bias = None if bias is None else np.asarray(bias, np.float64)
  if column_scale is not None:
    kernel = kernel * column_scale
    bias = None if bias is None else bias * column_scale
  shift = column_shifts(kernel)
  p = {"w": np.round(kernel * 2.0**shift[..., None, :]), "unscale": 2.0**-shift}
  if bias is not None:
    p["b"] = np.round(bias * 2.0**(layers.ACT_BITS + shift))
  return p


def keras_dense(layer, column_scale=None):
  """Params of a Keras Dense layer."""
  return dense(layer.kernel.numpy(), layer.bias.numpy() if layer.use_bias else None,
               column_scale)


def _query_scale(dim, heads, columns):
  """1/sqrt(head_dim) on the first `dim` (query) columns of `columns` outputs."""
  scale = np.ones(columns)
  scale[:dim] = (dim // heads)**-0.5
  return scale


def layer_norm(layer):
  """Params of a Keras LayerNormalization over the last axis."""
  gamma, shift = quantize_weight(layer.gamma.numpy())
  return {"gamma": gamma, "shift": shift,
          "beta": np.round(layer.beta.numpy().astype(np.float64) *
                           2.0**(layers.ACT_BITS + shift)),
          "eps": epsilon(layer)}


def epsilon(layer):
  """A LayerNorm's epsilon at 2 ACT_BITS fractional bits (it is added to a variance)."""
  return float(round(layer.epsilon * 2.0**(2 * layers.ACT_BITS)))


def mlp(sequential):
  fc1, fc2 = sequential.layers
  return {"fc1": keras_dense(fc1), "fc2": keras_dense(fc2)}


def swin_block(block):
  """Params of a tflic SwinBlock."""
  attn = block.attn
  dim, heads, ws = attn.dim, attn.num_heads, attn.window_size
  n = ws * ws
  bias = attn.relative_position_bias_table.numpy()[attn._index]  # pylint: disable=protected-access
  bias = np.transpose(np.reshape(bias, [n, n, heads]), [2, 0, 1])
  return {
      "window": ws, "shift": ws // 2 if block.shift else 0,
      "norm1": layer_norm(block.norm1), "norm2": layer_norm(block.norm2),
      "mlp": mlp(block.mlp),
      "attn": {"heads": heads, "qkv": keras_dense(attn.qkv, _query_scale(dim, heads, 3 * dim)),
               "proj": keras_dense(attn.proj), "bias": activation(bias)},
  }


def patch_split(layer):
  if layer.norm is not None or layer.kernel_size is not None:
    raise ValueError("the integer hyper synthesis supports linear patch splitting without "
                     "LayerNorm only (resample_kernel 0)")
  return {"expansion": keras_dense(layer.expansion)}


def hyper_synthesis(sequential):
  """Params of h_s: patch split, Swin blocks, patch split."""
  first, *blocks, last = sequential.layers
  return {"resample0": patch_split(first), "blocks": [swin_block(b) for b in blocks],
          "resample1": patch_split(last)}


def conv(layer):
  """Params of a Keras Conv2D (stride 1, odd kernel) or Conv2DTranspose (stride 2), "same"
  padding, linear or ReLU, for `layers.conv_stack`: w [k, k, in, out] with one scale per
  output channel."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  transposed = isinstance(layer, tf.keras.layers.Conv2DTranspose)
  kernel = np.asarray(layer.kernel.numpy(), np.float64)
  if transposed:
    kernel = np.transpose(kernel, [0, 1, 3, 2])  # Keras' [k, k, out, in]
  k, k2, n, m = kernel.shape
  activation = tf.keras.activations.serialize(layer.activation)
  stride = 2 if transposed else 1
  if (k != k2 or layer.padding != "same" or layer.strides != (stride, stride) or
      layer.dilation_rate != (1, 1) or not layer.use_bias or
      activation not in ("linear", "relu") or (k < 2 if transposed else k % 2 != 1)):
    raise ValueError(f"the integer hyper synthesis supports square 'same' convolutions with "
                     f"bias, linear or ReLU, odd kernels of stride 1 and transposed ones of "
                     f"stride 2 (k >= 2); not {layer.name}")
  if k * k * n > layers.MAX_CONV_TERMS:
    raise ValueError(f"{layer.name}: {k * k * n} products per output exceed "
                     f"{layers.MAX_CONV_TERMS}, the limit of exact integer sums")
  p = dense(kernel.reshape(k * k * n, m), layer.bias.numpy())
  p["w"] = p["w"].reshape(k, k, n, m)
  p.update(stride=stride, relu=int(activation == "relu"))
  return p


def conv_hyper_synthesis(sequential):
  """Params of a convolutional h_s (`tflic.model.cnn_transforms`): its layers in order."""
  return {"layers": [conv(layer) for layer in sequential.layers]}


def _folded_dense(norm, layer):
  """Params of layer(gamma * x + beta): a LayerNorm's scale and offset folded in."""
  gamma, beta = (np.asarray(v.numpy(), np.float64) for v in (norm.gamma, norm.beta))
  kernel, bias = (np.asarray(v.numpy(), np.float64) for v in (layer.kernel, layer.bias))
  return dense(gamma[:, None] * kernel, beta @ kernel + bias)


def cross_attention_block(block):
  dim, heads = block.dim, block.num_heads
  return {
      "heads": heads,
      "norm_query": layer_norm(block.norm_query),

      "norm_mlp": layer_norm(block.norm_mlp),
      "query": keras_dense(block.query, _query_scale(dim, heads, dim)),
      # norm_context's scale and offset folded into the key/value layer.
      "key_value": _folded_dense(block.norm_context, block.key_value),
      "proj": keras_dense(block.proj), "mlp": mlp(block.mlp),
  }


def context(layer):
  """Params of a ContextTransformer."""
  return {
      "chunk_embed": keras_dense(layer.chunk_embed),
      "hyper_embed": keras_dense(layer.hyper_embed),
      "group_embedding": activation(layer.group_embedding.numpy()),
      "slot_embedding": activation(layer.slot_embedding.numpy()),
      "query_embedding": activation(layer.query_embedding.numpy()),
      "blocks": [cross_attention_block(b) for b in layer.blocks],
      "context_eps": epsilon(layer.blocks[0].norm_context),
      "head_norm": layer_norm(layer.head_norm),
      "head": dense(layer.head_kernel.numpy(), layer.head_bias.numpy()),
  }


def gelu_table():
  """round(gelu(x) 2^ACT_BITS) for x = i / 2^ACT_BITS - GELU_RANGE (exact erf GELU)."""
  one = 2.0**layers.ACT_BITS
  x = np.arange(2 * layers.GELU_RANGE * 2**layers.ACT_BITS) / one - layers.GELU_RANGE
  return np.round(np.array([0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x]) *
                  one)


def exp_table():
  """round(exp(-d) 2^PROB_BITS) for d = i / 2^ACT_BITS, 0 <= d <= EXP_RANGE."""
  d = np.arange(layers.EXP_RANGE * 2**layers.ACT_BITS + 1) / 2.0**layers.ACT_BITS
  return np.round(np.array([math.exp(-v) for v in d]) * 2.0**layers.PROB_BITS)


def scale_thresholds(config):
  """Integer log-scales at which the table index steps up: index i covers
  [thresholds[i - 1], thresholds[i]). The float model's index is
  floor((log_scale - ln scale_min) / step) on the same grid."""
  log_min = math.log(config.scale_min)
  step = (math.log(config.scale_max) - log_min) / (config.num_scales - 1)
  return np.array([math.ceil((log_min + i * step) * 2.0**layers.ACT_BITS)
                   for i in range(1, config.num_scales)], np.float64)


def network_params(model):
  """The integer networks of a TflicModel: {"hyper_synthesis": .., "context": ..}."""
  synthesis = conv_hyper_synthesis if model.config.transform == "cnn" else hyper_synthesis
  return {"hyper_synthesis": synthesis(model.hyper_synthesis),
          "context": context(model.context)}


def libm_tables(config):
  """The tables computed through libm: GELU, exp and the scale thresholds."""
  return {"gelu": gelu_table(), "exp": exp_table(), "thresholds": scale_thresholds(config)}
