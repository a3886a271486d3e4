"""Integer versions of tflic's transformer layers (the numpy reference of the C core).

Fixed point: an activation `a` stands for `a / 2^ACT_BITS`; a weight column `w` with
shift `s` for `w / 2^s` (layers keep `unscale` = 2^-s per output column), its bias at
`ACT_BITS + s` fractional bits. Every function takes
`ops` (`tflic.model.backends.NUMPY`) and a parameter dict made by
`tflic.codec.deterministic.quantize`. Activations are clamped to |a| <= ACT_LIMIT after every
rescaling, which with |w| <= 2^WEIGHT_BITS and at most 2^11 terms per sum keeps every
partial sum below 2^53 (exact in float64); convolutions (the CNN h_s) sum at most
MAX_CONV_TERMS products of 2^36, below 2^52. Nonlinearities are tables (GELU, exp) and exact
integer division / square roots.
"""

from tflic.model import windows

ACT_BITS = 10  # fractional bits of activations: a resolution of 1/1024
ACT_LIMIT = 2.0**21  # |activation| <= 2048.0
WEIGHT_BITS = 15  # |integer weight| <= 2^15
PROB_BITS = 15  # attention weights sum to 2^15
NORM_EXTRA_BITS = 4  # extra fractional bits of a LayerNorm's standard deviation
NORM_RECIPROCAL_BITS = 20  # extra fractional bits of its reciprocal
GELU_RANGE = 8  # GELU is tabulated on [-8, 8); beyond it is 0 or the identity
EXP_RANGE = 12  # exp(-d) is tabulated for d in [0, 12]; round(exp(-12) 2^15) = 0
MASKED = -(2.0**40)  # a logit no visible one comes near
MAX_CONV_TERMS = 2**16  # k * k * input channels of an integer convolution


def shift_round(ops, x, bits):
  """round(x / 2^bits), halves up; exact for |x| < 2^52."""
  return unscale_round(ops, x, 2.0**-bits)


def unscale_round(ops, x, unscale):
  """round(x * unscale) for powers of two `unscale` (a number or an array), halves up."""
  return ops.floor(x * unscale + 0.5)


def floordiv(ops, a, b):
  """floor(a / b) exactly for integers |a|, |b| < 2^52, b > 0.

  The quotient from one float division is within one of the exact floor, so one
  correction each way makes it exact whatever the division's rounding.
  """
  q = ops.floor(a / b)
  q -= ops.where(q * b > a, 1.0, 0.0)
  return q + ops.where((q + 1.0) * b <= a, 1.0, 0.0)


def isqrt(ops, n):
  """floor(sqrt(n)) exactly for integers 0 <= n < 2^52."""
  r = ops.floor(ops.sqrt(n))
  r -= ops.where(r * r > n, 1.0, 0.0)
  return r + ops.where((r + 1.0) * (r + 1.0) <= n, 1.0, 0.0)


def clamp(ops, x):
  return ops.clip(x, -ACT_LIMIT, ACT_LIMIT)


def dense(ops, p, x):
  """Linear layer: x [..., n] -> [..., m]."""
  acc = ops.dense(x, p["w"])
  if "b" in p:
    acc += p["b"]
  return clamp(ops, unscale_round(ops, acc, p["unscale"]))


def normalize(ops, x, eps):
  """(x - mean) / sqrt(variance + eps) over the last axis, at ACT_BITS (|x| <= 2^21).

  eps is at 2 ACT_BITS (round(1e-5 2^20) = 10).
  """
  n = x.shape[-1]
  if n > 512:
    raise ValueError(f"integer LayerNorm supports at most 512 channels, got {n}")
  mean = floordiv(ops, ops.reduce_sum(x, -1, keepdims=True) + n // 2, n)
  centred = x - mean  # |centred| <= 2^22, its squares summed over n <= 512 below 2^53
  variance = floordiv(ops, ops.reduce_sum(centred * centred, -1, keepdims=True), n)
  # The standard deviation at ACT_BITS + NORM_EXTRA_BITS fractional bits (>= 50, from
  # eps), and its reciprocal at 2 ACT_BITS + 2 NORM_EXTRA_BITS + NORM_RECIPROCAL_BITS.
  std = isqrt(ops, (variance + eps) * 2.0**(2 * NORM_EXTRA_BITS))
  reciprocal = floordiv(
      ops, 2.0**(ACT_BITS + NORM_EXTRA_BITS + NORM_RECIPROCAL_BITS) + ops.floor(std * 0.5),
      std)  # <= 2^28.4
  return shift_round(ops, centred * reciprocal, NORM_RECIPROCAL_BITS)  # product < 2^51


def layer_norm(ops, p, x):
  """LayerNorm over the last axis, then the integer scale and offset."""
  normed = normalize(ops, x, p["eps"])
  return clamp(ops, shift_round(ops, normed * p["gamma"] + p["beta"], p["shift"]))


def gelu(ops, table, x):
  """GELU from its table: table[i] = round(gelu((i - R) / 2^ACT_BITS) 2^ACT_BITS)."""
  r = GELU_RANGE * 2.0**ACT_BITS
  inside = ops.take(table, ops.clip(x + r, 0.0, 2.0 * r - 1.0))
  return ops.where(x >= r, x, ops.where(x < -r, 0.0, inside))


def mlp(ops, p, gelu_table, x):
  return dense(ops, p["fc2"], gelu(ops, gelu_table, dense(ops, p["fc1"], x)))


def attend(ops, exp_table, logits, values, mask=None):
  """softmax(logits) @ values in integers.

  logits [..., q, t] at ACT_BITS, values [..., t, d]; mask (bool, broadcastable to the
  logits) hides tokens, and every query must see at least one.
  """
  if mask is not None:
    logits = ops.where(mask, logits, MASKED)
  d = ops.reduce_max(logits, -1, keepdims=True) - logits  # >= 0
  e = ops.take(exp_table, ops.minimum(d, EXP_RANGE * 2.0**ACT_BITS))
  total = ops.reduce_sum(e, -1, keepdims=True)  # >= 2^PROB_BITS: the maximum has e = 2^15
  probs = floordiv(ops, e * 2.0**PROB_BITS + ops.floor(total * 0.5), total)
  return clamp(ops, shift_round(ops, ops.matmul(probs, values), PROB_BITS))


def _split_heads(ops, x, num_heads):
  """[..., n, dim] -> [..., heads, n, dim / heads]."""
  rank = len(x.shape)
  x = ops.reshape(x, ops.dims(x)[:-1] + [num_heads, x.shape[-1] // num_heads])
  return ops.transpose(x, list(range(rank - 2)) + [rank - 1, rank - 2, rank])


def _merge_heads(ops, x):
  """[..., heads, n, head_dim] -> [..., n, heads * head_dim]."""
  rank = len(x.shape)
  x = ops.transpose(x, list(range(rank - 3)) + [rank - 2, rank - 3, rank - 1])
  dims = ops.dims(x)
  return ops.reshape(x, dims[:-2] + [x.shape[-2] * x.shape[-1]])


def window_attention(ops, p, tables, windowed, same_region):
  """Swin window attention: windowed [B', N, dim]; same_region bool [nW, N, N] or None."""
  heads = p["heads"]
  qkv = dense(ops, p["qkv"], windowed)
  dim = qkv.shape[-1] // 3
  q, k, v = (_split_heads(ops, qkv[..., i * dim:(i + 1) * dim], heads)
             for i in range(3))  # [B', heads, N, hd]
  logits = shift_round(ops, ops.matmul(q, k, transpose_b=True), ACT_BITS) + p["bias"]
  n = windowed.shape[1]
  num_windows = ops.dims(same_region)[0]
  logits = ops.reshape(logits, [-1, num_windows, heads, n, n])
  logits = ops.where(same_region[None, :, None], logits, MASKED)
  logits = ops.reshape(logits, [-1, heads, n, n])
  out = attend(ops, tables["exp"], logits, v)
  return dense(ops, p["proj"], _merge_heads(ops, out))


def swin_block(ops, p, tables, x):
  """Swin block on [B, H, W, dim], any H and W (padded to whole windows, then cropped)."""
  ws, shift = p["window"], p["shift"]
  b, height, width, _ = ops.dims(x)
  padded_height = (height + ws - 1) // ws * ws
  padded_width = (width + ws - 1) // ws * ws
  h = layer_norm(ops, p["norm1"], x)
  h = ops.pad(h, [[0, 0], [0, padded_height - height], [0, padded_width - width], [0, 0]])
  if shift:
    h = ops.roll(h, [-shift, -shift], [1, 2])
  region = windows.same_region(ops, height, width, padded_height, padded_width, ws, shift)
  h = window_attention(ops, p["attn"], tables, windows.partition(ops, h, ws), region)
  h = windows.merge(ops, h, b, padded_height, padded_width, ws)
  if shift:
    h = ops.roll(h, [shift, shift], [1, 2])
  x = clamp(ops, x + h[:, :height, :width])
  return clamp(ops, x + mlp(ops, p["mlp"], tables["gelu"], layer_norm(ops, p["norm2"], x)))


def depth_to_space(ops, x):
  """tf.nn.depth_to_space(x, 2): [B, H, W, 4C] -> [B, 2H, 2W, C], channel (2a + b) C + c
  to pixel (2i + a, 2j + b)."""
  b, h, w, _ = ops.dims(x)
  x = ops.reshape(x, [b, h, w, 2, 2, x.shape[-1] // 4])
  x = ops.transpose(x, [0, 1, 3, 2, 4, 5])
  return ops.reshape(x, [b, 2 * h, 2 * w, x.shape[-1]])


def patch_split(ops, p, x):
  """Linear map to 4 * C channels, then depth-to-space: [B, H, W, .] -> [B, 2H, 2W, C]."""
  return depth_to_space(ops, dense(ops, p["expansion"], x))


def _shifted(padded, pad, di, dj, height, width):
  """The [height, width] window of a map zero-padded by `pad`, moved by (di, dj)."""
  return padded[:, pad + di:pad + di + height, pad + dj:pad + dj + width]


def _tap_sum(ops, x, taps):
  """sum over taps (di, dj, w) of x[i + di, j + dj] @ w, zeros outside x: [B, H, W, m].

  One product per tap, accumulated in `taps`' fixed order: exact in float64 (module
  docstring), and no k*k-times-larger patch tensor on large images.
  """
  b, height, width, _ = ops.dims(x)
  pad = max(max(abs(di), abs(dj)) for di, dj, _ in taps)
  padded = ops.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
  acc = None
  for di, dj, w in taps:
    term = ops.dense(_shifted(padded, pad, di, dj, height, width), w)
    acc = term if acc is None else acc + term
  return acc


def _finish_conv(ops, p, acc):
  """Bias, rounding back to ACT_BITS, clamp and (p["relu"]) ReLU of a conv's sums."""
  x = clamp(ops, unscale_round(ops, acc + p["b"], p["unscale"]))
  return ops.maximum(x, 0.0) if p["relu"] else x


def conv2d(ops, p, x):
  """Keras Conv2D(k, odd, stride 1, padding "same"): w [k, k, n, m]; [B, H, W, n] ->
  [B, H, W, m]."""
  k = p["w"].shape[0]
  r = k // 2
  taps = [(i - r, j - r, p["w"][i, j]) for i in range(k) for j in range(k)]
  return _finish_conv(ops, p, _tap_sum(ops, x, taps))


def _transposed_taps(k, phase):
  """(kernel index, input offset) of the taps of a stride-2 transposed conv's output rows
  2i + phase: Keras' padding "same" is TensorFlow's, P = max(k - 2, 0) rows in total,
  P // 2 before, and output row o gathers w[t] x[(o + P // 2 - t) / 2] over the t that
  make it whole."""
  before = max(k - 2, 0) // 2
  return [(t, (phase + before - t) // 2) for t in range(k) if (phase + before - t) % 2 == 0]


def conv2d_transpose(ops, p, x):
  """Keras Conv2DTranspose(k, stride 2, padding "same"): w [k, k, n, m] (in, out: the
  quantizer transposes Keras' kernel); [B, H, W, n] -> [B, 2H, 2W, m].

  Computed as four stride-1 convolutions, one per output phase (a, b), whose results
  interleave as the pixels (2i + a, 2j + b): no zero-inserted map, no wasted products.
  """
  k = p["w"].shape[0]
  phases = []
  for a in range(2):
    for b in range(2):
      taps = [(di, dj, p["w"][ti, tj]) for ti, di in _transposed_taps(k, a)
              for tj, dj in _transposed_taps(k, b)]
      phases.append(_finish_conv(ops, p, _tap_sum(ops, x, taps)))
  return depth_to_space(ops, ops.concat(phases, -1))


def conv_stack(ops, layer_params, x):
  """A stack of `conv2d` (stride 1) and `conv2d_transpose` (stride 2) layers."""
  for p in layer_params:
    x = conv2d_transpose(ops, p, x) if p["stride"] == 2 else conv2d(ops, p, x)
  return x


def context_key_value(ops, p, normed_context):
  """A cross-attention block's keys and values [..., t, 2 dim] of normalized context
  tokens (`normalize`); the block's LayerNorm scale and offset are folded into its
  key/value layer, so every block of a context shares the one normalization."""
  return dense(ops, p["key_value"], normed_context)


def cross_attention_block(ops, p, tables, queries, key_value, mask):
  """queries [..., q, dim] attend to context tokens under a bool mask [..., q, t].

  key_value: the context's `context_key_value` for this block, [..., t, 2 dim]. Callers
  that code many steps over one context compute it once.
  """
  heads = p["heads"]
  q = _split_heads(ops, dense(ops, p["query"], layer_norm(ops, p["norm_query"], queries)),
                   heads)
  dim = key_value.shape[-1] // 2
  k = _split_heads(ops, key_value[..., :dim], heads)
  v = _split_heads(ops, key_value[..., dim:], heads)
  logits = shift_round(ops, ops.matmul(q, k, transpose_b=True), ACT_BITS)
  out = _merge_heads(ops, attend(ops, tables["exp"], logits, v, mask[..., None, :, :]))
  queries = clamp(ops, queries + dense(ops, p["proj"], out))
  return clamp(ops, queries + mlp(ops, p["mlp"], tables["gelu"],
                                  layer_norm(ops, p["norm_mlp"], queries)))
