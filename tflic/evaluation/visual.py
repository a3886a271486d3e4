"""Side-by-side crops of one image as each codec decodes it at about the same file size.

For an image, tflic's setting whose file is nearest a target bpp is picked from the
measured results, then each other codec's setting whose file on that image is nearest
tflic's in bytes. The same crop of the original and of every decode (the most detailed
window of the image, where artifacts show) is drawn side by side, enlarged without
smoothing, with each file's bytes and whole-image PSNR under it: one PNG per image.
"""

from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

from tflic.evaluation import codecs as codecs_lib

CAPTION_HEIGHT = 36
GAP = 6


def detailed_crop(image: np.ndarray, size: int) -> tuple:
  """(top, left) of the size x size window with the most gradient energy, on a grid."""
  grey = image.astype(np.float32).mean(-1)
  energy = np.abs(np.diff(grey, axis=0))[:, :-1] + np.abs(np.diff(grey, axis=1))[:-1]
  height, width = energy.shape
  size = min(size, height, width)
  best, where = -1.0, (0, 0)
  step = max(size // 4, 1)
  for top in range(0, height - size + 1, step):
    for left in range(0, width - size + 1, step):
      score = float(energy[top:top + size, left:left + size].mean())
      if score > best:
        best, where = score, (top, left)
  return where


def nearest_setting(entries: Dict[str, Dict[str, Any]], image: str, key: str, target: float):
  """The setting key whose entry for `image` has `key` (bytes, bpp) nearest `target`."""
  measured = [(abs(table[image][key] - target), setting)
              for setting, table in entries.items() if image in table]
  return min(measured)[1] if measured else None


def choose(results: Dict[str, Any], image: str, codec_names: Sequence[str],
           target_bpp: float) -> List[tuple]:
  """[(codec, setting key)] for one image: tflic nearest target_bpp, the others nearest
  tflic's bytes; codecs without a measurement of the image are left out."""
  tables = {name: results["codecs"].get(name, {}).get("results", {}) for name in codec_names}
  tflic = nearest_setting(tables.get("tflic", {}), image, "bpp", target_bpp)
  if tflic is None:
    return []
  size = tables["tflic"][tflic][image]["bytes"]
  chosen = [("tflic", tflic)]
  for name in codec_names:
    if name != "tflic":
      setting = nearest_setting(tables[name], image, "bytes", size)
      if setting is not None:
        chosen.append((name, setting))
  return chosen


def _panel(crop: np.ndarray, zoom: int, caption: Sequence[str], font) -> Image.Image:
  picture = Image.fromarray(crop).resize((crop.shape[1] * zoom, crop.shape[0] * zoom),
                                         Image.NEAREST)
  panel = Image.new("RGB", (picture.width, picture.height + CAPTION_HEIGHT), "white")
  panel.paste(picture, (0, 0))
  draw = ImageDraw.Draw(panel)
  for i, line in enumerate(caption):
    draw.text((4, picture.height + 3 + 16 * i), line, fill="black", font=font)
  return panel


def comparison(image: np.ndarray, name: str, chosen: Sequence[tuple],
               codecs: Dict[str, codecs_lib.Codec], results: Dict[str, Any], out_path,
               crop: int = 192, zoom: int = 2) -> Path:
  """Writes the side-by-side PNG of one image; returns its path.

  `chosen` is `choose`'s list; each codec encodes the image again at its setting (the
  results hold numbers, not pixels) and must give the bytes the results recorded.
  """
  crop = min(crop, *image.shape[:2])
  top, left = detailed_crop(image, crop)
  window = (slice(top, top + crop), slice(left, left + crop))
  font = ImageFont.load_default(size=13)  # Pillow's own font: nothing to install
  panels = [_panel(image[window], zoom, [f"original {name}", f"crop at ({left}, {top})"],
                   font)]
  for codec_name, key in chosen:
    codec = codecs[codec_name]
    setting = next(s for s in codec.settings if codec.setting_key(s) == key)
    data = codec.encode(image, setting)
    entry = results["codecs"][codec_name]["results"][key][name]
    if len(data) != entry["bytes"]:
      raise ValueError(f"{codec_name} {key} wrote {len(data)} bytes for {name}, the results "
                       f"say {entry['bytes']}: not the codec that measured them")
    decoded = np.asarray(codec.decode(data))
    panels.append(_panel(decoded[window], zoom, [
        f"{codec_name} {codec.setting_label} {key}",
        f"{len(data):,} B, {entry['bpp']:.3f} bpp, {entry['psnr']:.2f} dB"], font))
  sheet = Image.new("RGB", (sum(p.width for p in panels) + GAP * (len(panels) - 1),
                            max(p.height for p in panels)), "white")
  x = 0
  for panel in panels:
    sheet.paste(panel, (x, 0))
    x += panel.width + GAP
  out_path = Path(out_path)
  out_path.parent.mkdir(parents=True, exist_ok=True)
  sheet.save(out_path)
  return out_path
