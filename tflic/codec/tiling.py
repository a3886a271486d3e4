"""Where the tiles of a tiled analysis or synthesis go, and their assembly (numpy only).

The analysis g_a and the synthesis g_s run on overlapping tiles so that their
activations stay bounded on any image; the latent and the coding loop stay whole, so the
file format does not depend on the tiling. Tiles are laid out on the latent grid (one
unit = `LATENT_STRIDE` pixels) and are exact: every latent (or pixel) a tile keeps sees
the same neighbourhood, computed in the same windows, as in one piece, so tiled and
untiled results differ only by float rounding.

Two facts make that so:
- alignment: a tile starts on a multiple of every window period of every stage (for the
  Swin transforms, `window_size * stride` pixels at each stage, shifted windows included)
  and of every stride, so its windows are the image's windows;
- margin: what a kept region depends on, found by walking its interval back through the
  layers (`_depends_on`), rounded up to the alignment. Tokens in the margin may differ
  from the image's (cut windows, zero padding) but no kept token depends on them.

The layout is a function of the image size, the model's config and the memory budget
only, so it is the same on every machine, and so are the files.
"""

import dataclasses
import math

import numpy as np

LATENT_STRIDE = 16
# Activation memory of the transforms a tile may take, unless the caller says otherwise.
DEFAULT_BUDGET_BYTES = 1 << 30


@dataclasses.dataclass(frozen=True)
class Tile:
  """One tile on the latent grid: it computes rows [top, bottom) x columns [left, right)
  and keeps [keep_top, keep_bottom) x [keep_left, keep_right) of them (all in latent
  units, absolute)."""
  top: int
  bottom: int
  left: int
  right: int
  keep_top: int
  keep_bottom: int
  keep_left: int
  keep_right: int

  @property
  def computed(self):
    """(row slice, column slice) of what the tile computes, in latent units."""
    return slice(self.top, self.bottom), slice(self.left, self.right)

  @property
  def kept(self):
    """(row slice, column slice) of what the tile keeps, relative to `computed`."""
    return (slice(self.keep_top - self.top, self.keep_bottom - self.top),
            slice(self.keep_left - self.left, self.keep_right - self.left))

  @property
  def kept_absolute(self):
    """(row slice, column slice) of what the tile keeps, in latent units."""
    return slice(self.keep_top, self.keep_bottom), slice(self.keep_left, self.keep_right)

  def scaled(self, factor):
    """The same tile with every coordinate times `factor` (e.g. 16: in pixels)."""
    return Tile(*(factor * v for v in dataclasses.astuple(self)))


def config_value(config, name, default=None):
  """A field of a model config given as a dict (its JSON) or a ModelConfig."""
  if isinstance(config, dict):
    return config.get(name, default)
  return getattr(config, name, default)


# Layers, in the order they run, as the little each needs for its dependencies:
# ("window", size, shift): self-attention within windows (rolled by -shift);
# ("down", kernel, pad_before): 2x downsampling, output i reads inputs
#   2i - pad_before .. 2i - pad_before + kernel - 1;
# ("up", kernel, pad_before): 2x upsampling, output j reads the inputs i with
#   2i - pad_before <= j <= 2i - pad_before + kernel - 1 (a transposed conv's geometry).
# Per-token layers (Dense, LayerNorm, MLP, GDN) do not widen anything and are left out.


def _swin_stage(config, stage):
  window = int(config_value(config, "window_size"))
  return [("window", window, window // 2 if i % 2 else 0)
          for i in range(int(config_value(config, "depths")[stage]))]


def analysis_layers(config):
  """g_a's layers (see the table above) for a model config (dict or ModelConfig)."""
  if config_value(config, "transform", "swin") == "cnn":
    # Keras "same" conv of stride 2 on an even input: pad (k - 2) // 2 before.
    return [("down", 5, 1)] * 4
  kernel = int(config_value(config, "resample_kernel", 0) or 0)
  down = ("down", 2, 0) if not kernel else ("down", kernel, (kernel - 2) // 2)
  layers = []
  for stage in range(4):
    layers.append(down)
    layers += _swin_stage(config, stage)
  window = int(config_value(config, "window_size"))
  layers += [("window", window, window // 2 if i % 2 else 0)
             for i in range(int(config_value(config, "latent_depth", 0) or 0))]
  return layers


def synthesis_layers(config):
  """g_s's layers (see the table above) for a model config (dict or ModelConfig)."""
  if config_value(config, "transform", "swin") == "cnn":
    # Keras "same" transposed conv of stride 2, kernel 5.
    return [("up", 5, 1)] * 4
  # A sub-pixel conv (kernel k, stride 1, then depth-to-space): output j reads the inputs
  # i with |i - floor(j/2)| <= (k-1)/2, i.e. 2i - (k-1) <= j <= 2i - (k-1) + 2k - 1
  # (k = 1: Swin's linear patch split, j reads floor(j/2)).
  kernel = int(config_value(config, "resample_kernel", 0) or 0) or 1
  up = ("up", 2 * kernel, kernel - 1)
  layers = []
  for stage in reversed(range(4)):
    layers += _swin_stage(config, stage)
    layers.append(up)
  return layers


def _depends_on(layers, lo, hi):
  """The input interval [lo', hi') the output interval [lo, hi) of `layers` reads."""
  for layer in reversed(layers):
    kind = layer[0]
    if kind == "window":
      _, size, shift = layer
      lo = (lo - shift) // size * size + shift
      hi = -((shift - hi) // size) * size + shift
    elif kind == "down":
      _, kernel, pad = layer
      lo, hi = 2 * lo - pad, 2 * (hi - 1) - pad + kernel
    elif kind == "up":
      _, kernel, pad = layer
      # inputs i with 2i - pad <= j <= 2i - pad + kernel - 1 for some j in [lo, hi)
      lo = -((-(lo - kernel + 1 + pad)) // 2)
      hi = (hi - 1 + pad) // 2 + 1
    else:
      raise ValueError(f"unknown layer {layer!r}")
  return lo, hi


def _periods(layers):
  """Every window period and stride of `layers`, in input units of the first layer."""
  periods, unit = [1], 1.0
  for layer in layers:
    if layer[0] == "down":
      unit *= 2
      periods.append(unit)
    elif layer[0] == "up":
      unit /= 2
    elif layer[0] == "window":
      periods.append(layer[1] * unit)
  return periods


@dataclasses.dataclass(frozen=True)
class Geometry:
  """How a model's transforms tile: `align` and `margin` in latent units (tiles start on
  multiples of `align` and compute `margin` beyond what they keep, each side)."""
  align: int
  margin: int


def _in_latent_units(value, units_per_latent):
  """value (in the layer stack's input units) in latent units, rounded up."""
  return math.ceil(value / units_per_latent)


def geometry(config):
  """The `Geometry` of a model config that serves both its analysis and its synthesis."""
  analysis, synthesis = analysis_layers(config), synthesis_layers(config)
  # Alignment: the least common multiple of every period, in latent units (g_a's
  # periods are in pixels, g_s's in latents; g_s's stages are g_a's mirrored).
  periods = [p / LATENT_STRIDE for p in _periods(analysis)]
  periods += _periods_up(synthesis)
  align = 1
  for p in periods:
    if p >= 1:
      align = math.lcm(align, int(round(p)))
  # Margins: an aligned kept block of `align` latents (its dependencies repeat with
  # that period), walked back through each transform.
  needed = 0
  for a in (0, align):  # two positions: the result must not depend on which
    # g_a: latents [a, a + align) read pixels [lo, hi).
    lo, hi = _depends_on(analysis, a, a + align)
    needed = max(needed, _in_latent_units(a * LATENT_STRIDE - lo, LATENT_STRIDE),
                 _in_latent_units(hi - (a + align) * LATENT_STRIDE, LATENT_STRIDE))
    # g_s: the pixels of latents [a, a + align) read latents [lo, hi).
    lo, hi = _depends_on(synthesis, a * LATENT_STRIDE, (a + align) * LATENT_STRIDE)
    needed = max(needed, a - lo, hi - (a + align))
  margin = -(-needed // align) * align
  return Geometry(align=align, margin=margin)


def _periods_up(layers):
  """Every window period and stride of an upsampling stack, in units of its output's
  coarsest grid: the latent (the periods of g_s at stride s are window * s / 16)."""
  periods, unit = [], 1.0
  for layer in layers:
    if layer[0] == "up":
      unit /= 2
    elif layer[0] == "window":
      periods.append(layer[1] * unit)
  return periods


def activation_bytes_per_pixel(config):
  """An upper estimate of the transforms' peak float32 activation bytes per pixel of a
  tile (the widest layer's input, output and temporaries), from the config alone."""
  if config_value(config, "transform", "swin") == "cnn":
    dims = list(config_value(config, "embed_dims"))
    return 4 * max(d / 4 ** (i + 1) for i, d in enumerate(dims)) * 8 + 64
  dims = list(config_value(config, "embed_dims"))
  heads = list(config_value(config, "num_heads"))
  window = int(config_value(config, "window_size"))
  mlp = float(config_value(config, "mlp_ratio", 2.0))
  worst = 0.0
  for stage, (dim, head) in enumerate(zip(dims, heads)):
    tokens = 1.0 / 4 ** (stage + 1)  # per pixel
    # residual in/out, normed, q/k/v, attention out, MLP hidden, and the logits and
    # softmax of every window (window**2 per token and head), plus the pre-merge
    # map (4x the tokens of the previous width).
    floats = tokens * (dim * (6 + mlp) + 2 * window * window * head)
    previous = dims[stage - 1] if stage else 3
    floats += 4 * tokens * previous * 2
    worst = max(worst, floats)
  # Input pixels (uint8 and float32) and the output image.
  return 4 * worst + 4 * 3 * 2 + 3


def kept_side(config, budget_bytes, geometry_=None):
  """The kept side (latent units, a multiple of align) of the largest square tile whose
  computed area (kept + 2 margins) fits `budget_bytes` of activations; at least align."""
  geo = geometry_ or geometry(config)
  per_pixel = activation_bytes_per_pixel(config)
  side_pixels = math.sqrt(max(budget_bytes, 0) / per_pixel)
  side = int(side_pixels // LATENT_STRIDE) - 2 * geo.margin
  return max(geo.align, side // geo.align * geo.align)


def _split(length, kept, align, margin):
  """[(start, stop, keep_start, keep_stop)] along one axis of `length` latents."""
  if length <= kept:
    return [(0, length, 0, length)]
  count = -(-length // kept)
  # Even pieces (fewer wasted margins than a small last piece), aligned.
  piece = -(-(-(-length // count)) // align) * align
  spans = []
  for start in range(0, length, piece):
    stop = min(start + piece, length)
    spans.append((max(0, start - margin), min(length, stop + margin), start, stop))
  return spans


def single(height, width):
  """The one tile of an image coded in one piece."""
  rows, cols = -(-height // LATENT_STRIDE), -(-width // LATENT_STRIDE)
  return Tile(0, rows, 0, cols, 0, rows, 0, cols)


def plan(height, width, config, budget_bytes=DEFAULT_BUDGET_BYTES, kept=None):
  """The tiles of an image of height x width pixels, in row-major order: one where the
  whole image's activations fit `budget_bytes`.

  Each tile is a `Tile` in latent units; together the kept regions cover the latent grid
  (ceil(height / 16) x ceil(width / 16)) once. `kept` (latent units, a multiple of the
  model's alignment) overrides the side the budget gives, e.g. to test small tiles.
  """
  geo = geometry(config)
  if kept is None:
    whole = single(height, width)
    if (whole.bottom * whole.right * LATENT_STRIDE**2 * activation_bytes_per_pixel(config)
        <= budget_bytes):
      # In one piece an image needs no margins: its whole area may fill the budget, where
      # a tile's side must leave room for them.
      return [whole]
    kept = kept_side(config, budget_bytes, geo)
  elif kept < geo.align or kept % geo.align:
    raise ValueError(f"a tile's kept side must be a positive multiple of {geo.align} "
                     f"latents, got {kept}")
  rows = _split(-(-height // LATENT_STRIDE), kept, geo.align, geo.margin)
  cols = _split(-(-width // LATENT_STRIDE), kept, geo.align, geo.margin)
  return [Tile(top, bottom, left, right, keep_top, keep_bottom, keep_left, keep_right)
          for top, bottom, keep_top, keep_bottom in rows
          for left, right, keep_left, keep_right in cols]


def tile_pixels(image, tile):
  """The uint8 pixels [16 rows, 16 columns, 3] a tile's analysis reads from an image
  [H, W, 3]: beyond the image's bottom and right, its edge replicated, as the one-piece
  analysis pads to multiples of 16."""
  height, width = image.shape[:2]
  rows = np.minimum(np.arange(LATENT_STRIDE * tile.top, LATENT_STRIDE * tile.bottom),
                    height - 1)
  cols = np.minimum(np.arange(LATENT_STRIDE * tile.left, LATENT_STRIDE * tile.right),
                    width - 1)
  return image[rows[:, None], cols[None, :]]


def analyse_tiles(analyse, image, tiles, channels, report=None):
  """The latent [1, h, w, channels] (float32) of an image [H, W, 3] put together from the
  kept parts of its tiles; analyse(pixels) gives a tile's latent [1, rows, columns,
  channels] from its pixels (`tile_pixels`). report(stage, done, total), if given, hears
  of each tile ("analysis")."""
  height, width = image.shape[:2]
  y = np.empty([1, -(-height // LATENT_STRIDE), -(-width // LATENT_STRIDE), channels],
               np.float32)
  for i, tile in enumerate(tiles):
    if report:
      report("analysis", i, len(tiles))
    latent = analyse(tile_pixels(image, tile))
    y[(0, *tile.kept_absolute)] = latent[(0, *tile.kept)]
  if report:
    report("analysis", len(tiles), len(tiles))
  return y


def synthesize_tiles(synthesize, latent, tiles, height, width, report=None):
  """The uint8 image [height, width, 3] put together from the kept parts of its tiles;
  synthesize(piece) gives the uint8 pixels [16 rows, 16 columns, 3] of a piece [1, rows,
  columns, M] of the latent [1, h, w, M]. report as in `analyse_tiles` ("synthesis")."""
  image = np.empty([height, width, 3], np.uint8)
  for i, tile in enumerate(tiles):
    if report:
      report("synthesis", i, len(tiles))
    rows, cols = tile.computed
    pixels = synthesize(latent[:, rows, cols])
    top, left = LATENT_STRIDE * tile.top, LATENT_STRIDE * tile.left
    rows = slice(LATENT_STRIDE * tile.keep_top, min(LATENT_STRIDE * tile.keep_bottom, height))
    cols = slice(LATENT_STRIDE * tile.keep_left, min(LATENT_STRIDE * tile.keep_right, width))
    image[rows, cols] = pixels[rows.start - top:rows.stop - top,
                               cols.start - left:cols.stop - left]
  if report:
    report("synthesis", len(tiles), len(tiles))
  return image
