"""Tiled analysis and synthesis (tflic.codec.tiling): where tiles go, and that they are exact."""

import json

import numpy as np
import pytest

from tflic.codec import tiling
from tflic import config as config_lib

REPO_CONFIGS = {name: json.loads(config_lib.load(name).to_json())["model"]
                for name in ("tiny", "small", "cnn_small", "medium_hifi")}


def _covers_once(tiles, height, width):
  rows, cols = -(-height // 16), -(-width // 16)
  count = np.zeros([rows, cols], int)
  for tile in tiles:
    count[tile.kept_absolute] += 1
    assert 0 <= tile.top <= tile.keep_top < tile.keep_bottom <= tile.bottom <= rows
    assert 0 <= tile.left <= tile.keep_left < tile.keep_right <= tile.right <= cols
  return np.all(count == 1)


def test_small_models_windows_give_its_alignment_and_margin():
  # g_a: the latent stage's 8-latent windows align tiles to 128 pixels; its shifted
  # windows at 1/8 reach 64 pixels out (half a window, rounded up to the alignment);
  # g_s: 8 latents (the 1/8 stage's regular and shifted windows, then the latent's).
  geo = tiling.geometry(REPO_CONFIGS["small"])
  assert (geo.align, geo.margin) == (8, 8)
  assert tiling._depends_on(tiling.analysis_layers(REPO_CONFIGS["small"]), 8, 16) == (
      64, 320)
  assert tiling._depends_on(tiling.synthesis_layers(REPO_CONFIGS["small"]), 128, 256) == (
      0, 24)
  # Without shifted windows nothing crosses a window: no margin at all.
  assert tiling.geometry(REPO_CONFIGS["tiny"]) == tiling.Geometry(align=4, margin=0)
  # 5x5 convolutions of stride 2: no windows, two latents of overlap.
  assert tiling.geometry(REPO_CONFIGS["cnn_small"]) == tiling.Geometry(align=1, margin=2)


@pytest.mark.parametrize("height,width,kept", [(1, 1, 8), (128, 128, 8), (129, 300, 8),
                                               (4000, 6000, 56), (300, 17, 16)])
def test_kept_regions_cover_the_latent_grid_once_from_aligned_tiles(height, width, kept):
  cfg = REPO_CONFIGS["small"]
  tiles = tiling.plan(height, width, cfg, kept=kept)
  assert _covers_once(tiles, height, width)
  for tile in tiles:
    assert tile.top % 8 == 0 and tile.left % 8 == 0
    assert tile.keep_top % 8 == 0 and tile.keep_left % 8 == 0
    assert tile.keep_top - tile.top in (0, 8) and tile.keep_left - tile.left in (0, 8)
    assert tile.keep_bottom - tile.keep_top <= kept


def test_the_budget_sets_the_tile_and_one_tile_fits_a_small_image():
  cfg = REPO_CONFIGS["small"]
  sides = [tiling.kept_side(cfg, budget) for budget in (1 << 26, 1 << 28, 1 << 30, 1 << 32)]
  assert sides == sorted(sides) and sides[0] == 8 < sides[-1]
  assert len(tiling.plan(512, 768, cfg)) == 1  # Kodak in one piece by default
  assert len(tiling.plan(4000, 6000, cfg)) > 1
  assert tiling.plan(512, 768, cfg) == [tiling.single(512, 768)]
  with pytest.raises(ValueError, match="multiple of 8"):
    tiling.plan(512, 768, cfg, kept=12)


def test_an_image_whose_whole_area_fits_the_budget_is_one_piece():
  """One piece needs no margins: a wider model's Kodak image is not tiled although its side
  exceeds a margined tile's, and a larger image of the same shape is."""
  cfg = REPO_CONFIGS["medium_hifi"]
  budget = tiling.DEFAULT_BUDGET_BYTES
  assert tiling.kept_side(cfg, budget) * tiling.LATENT_STRIDE < 768
  assert tiling.plan(512, 768, cfg, budget) == [tiling.single(512, 768)]
  assert 512 * 768 * tiling.activation_bytes_per_pixel(cfg) <= budget
  assert 1024 * 1536 * tiling.activation_bytes_per_pixel(cfg) > budget
  assert len(tiling.plan(1024, 1536, cfg, budget)) > 1
  assert len(tiling.plan(512, 768, cfg, budget, kept=8)) == 6 * 4  # kept= still tiles


def _tiled(transform, inputs, tiles, scale_in, scale_out, out_channels):
  """transform run tile by tile on inputs [1, H, W, C]; tiles in latent units."""
  height = inputs.shape[1] * scale_out // scale_in
  width = inputs.shape[2] * scale_out // scale_in
  out = np.zeros([1, height, width, out_channels], np.float32)
  for tile in tiles:
    rows, cols = tile.computed
    piece = inputs[:, rows.start * scale_in:rows.stop * scale_in,
                   cols.start * scale_in:cols.stop * scale_in]
    result = transform(piece).numpy()
    keep_rows, keep_cols = tile.kept
    rows, cols = tile.kept_absolute
    out[:, rows.start * scale_out:rows.stop * scale_out,
        cols.start * scale_out:cols.stop * scale_out] = result[
            :, keep_rows.start * scale_out:keep_rows.stop * scale_out,
            keep_cols.start * scale_out:keep_cols.stop * scale_out]
  return out


def _with_margin(tile, margin, height, width):
  """The tile computing `margin` latents around what it keeps (clipped to the grid)."""
  return tiling.Tile(max(tile.keep_top - margin, 0),
                     min(tile.keep_bottom + margin, -(-height // 16)),
                     max(tile.keep_left - margin, 0),
                     min(tile.keep_right + margin, -(-width // 16)),
                     tile.keep_top, tile.keep_bottom, tile.keep_left, tile.keep_right)


@pytest.mark.parametrize("changes", [
    dict(depths=[1, 1, 2, 1], window_size=2),  # shifted windows at 1/8
    dict(depths=[2, 1, 1, 2], window_size=2, resample_kernel=3),  # convs, shifts at 1/16
    dict(transform="cnn"),
])
def test_tiles_compute_what_one_piece_does_and_need_their_margin(changes):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tflic.model import transforms  # pylint: disable=g-import-not-at-top
  d = json.loads(config_lib.load("tiny").to_json())
  d["model"].update(embed_dims=[8, 8, 8, 8], num_heads=[1, 1, 1, 1], latent_channels=8,
                    **changes)
  cfg = config_lib.from_dict(d).model
  tf.random.set_seed(1)
  analysis = transforms.analysis_transform(cfg)
  synthesis = transforms.synthesis_transform(cfg)
  geo = tiling.geometry(cfg)
  height, width = 16 * 8, 16 * 10  # latent 8 x 10: tiles with one and two inner sides
  rng = np.random.default_rng(0)
  image = tf.constant(rng.uniform(0, 1, [1, height, width, 3]), tf.float32)
  whole_y = analysis(image).numpy()
  latent = tf.constant(rng.normal(0, 2, whole_y.shape), tf.float32)
  whole_x = synthesis(latent).numpy()
  tiles = tiling.plan(height, width, cfg, kept=4)
  assert len(tiles) == 6
  y = _tiled(analysis, image, tiles, 16, 1, 8)
  x = _tiled(synthesis, latent, tiles, 1, 16, 3)
  assert np.abs(y - whole_y).max() < 1e-5 * max(1, np.abs(whole_y).max())
  assert np.abs(x - whole_x).max() < 1e-5 * max(1, np.abs(whole_x).max())
  # One alignment step less of margin is not enough: the computed margin is needed.
  assert geo.margin > 0
  short = [_with_margin(t, geo.margin - geo.align, height, width) for t in tiles]
  y_short = _tiled(analysis, image, short, 16, 1, 8)
  x_short = _tiled(synthesis, latent, short, 1, 16, 3)
  assert max(np.abs(y_short - whole_y).max(), np.abs(x_short - whole_x).max()) > 1e-4


class _WithoutHyperAnalysis:
  """A codec module as exported before `hyper_analysis`."""

  def __init__(self, module):
    self._module = module

  def __getattr__(self, name):
    if name == "hyper_analysis":
      raise AttributeError(name)
    return getattr(self._module, name)


def test_tiled_codec_writes_the_files_and_pixels_of_the_one_piece_codec(tiny_codec):
  from tflic.codec import tf_codec  # pylint: disable=g-import-not-at-top
  tiled = tf_codec.Codec(tiny_codec.module, tile_kept=4)
  rng = np.random.default_rng(3)
  image = (rng.uniform(0, 1, [150, 200, 1]) * np.linspace(0, 255, 200)[None, :, None] *
           np.ones(3)).astype(np.uint8)
  assert len(tiled.plan(150, 200)) == 12
  stages = []
  data = tiled.compress(image, 0.5, progress=lambda *a: stages.append(a))
  assert stages[0] == ("analysis", 0, 12) and ("analysis", 12, 12) in stages
  # The coding, in the C core's binding after hyper_analysis, reports its chunks...
  chunks = tiled._entropy_core().chunks(10, 13)  # pylint: disable=protected-access
  coding = [done for stage, done, total in stages if stage == "coding"]
  assert stages[-1] == ("coding", chunks, chunks) and coding[0] == 0 and len(coding) > 3
  assert all(a < b for a, b in zip(coding, coding[1:]))
  # ... and writes compress_latent's bytes (a module exported before hyper_analysis).
  stages = []
  old = tf_codec.Codec(_WithoutHyperAnalysis(tiny_codec.module), tile_kept=4)
  assert old.compress(image, 0.5, progress=lambda *a: stages.append(a)) == data
  assert stages[-1] == ("coding", 1, 1)
  one_piece = tiny_codec.compress(image, 0.5)
  assert abs(len(data) - len(one_piece)) <= 0.005 * len(one_piece)
  stages = []
  decoded = tiled.decompress(one_piece, progress=lambda *a: stages.append(a))
  assert stages[-1] == ("synthesis", 12, 12)
  assert np.abs(decoded.astype(int) - tiny_codec.decompress(one_piece)).max() <= 1
  assert np.abs(tiled.decompress(data).astype(int) - tiny_codec.decompress(data)).max() <= 1


def test_lite_decoder_tiles_its_synthesis_alike(tiny_lite_dir, tiny_codec):
  from tflic.lite import decoder as decoder_lib  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(4)
  image = rng.integers(0, 256, [100, 140, 3], dtype=np.uint8)
  data = tiny_codec.compress(image, 1.0)
  lite = decoder_lib.Decoder(str(tiny_lite_dir))
  header, y_hat = lite.decode_latent(data)
  whole = lite.synthesize(header, y_hat)
  tiled = lite.synthesize(header, y_hat, tile_kept=4)
  assert np.abs(tiled.astype(int) - whole).max() <= 1
  assert np.abs(tiled.astype(int) - tiny_codec.decompress(data)).max() <= 1


def test_refinement_of_an_image_larger_than_a_tile_is_a_one_line_error(tiny_codec):
  from tflic.codec import tf_codec  # pylint: disable=g-import-not-at-top
  from tflic import errors  # pylint: disable=g-import-not-at-top
  tiled = tf_codec.Codec(tiny_codec.module, tile_kept=4)
  image = np.zeros([100, 70, 3], np.uint8)
  with pytest.raises(errors.TflicError, match="larger than one tile"):
    tiled.compress(image, 0.5, refine_steps=2)
