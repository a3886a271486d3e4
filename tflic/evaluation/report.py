"""Turns results.json into an RD table (CSV, Markdown), BD figures and RD plots.

Rows average over images: mean bpp, mean PSNR, mean MS-SSIM, and MS-SSIM in dB as
-10 log10(1 - mean MS-SSIM), the convention of published curves such as CompressAI's. Published
reference curves come from a JSON file (see published_kodak.json) and are drawn dashed and
labelled as published; they are never mixed into the measured table.
"""

import csv
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from tflic import errors
from tflic.evaluation import bdrate
from tflic.evaluation import metrics

BUNDLED_PUBLISHED = {"kodak": Path(__file__).with_name("published_kodak.json")}
TABLE_COLUMNS = ("codec", "setting", "images", "bpp", "psnr", "msssim", "msssim_db",
                 "encode_seconds", "decode_seconds")
BD_COLUMNS = ("codec", "bd_rate_psnr", "bd_psnr", "bd_rate_msssim", "bd_msssim_db", "notes")
# Qualities that get a plot and BD columns: curve key -> axis label.
QUALITIES = {"psnr": "PSNR (RGB) [dB]", "msssim_db": "MS-SSIM [dB]"}


def _mean(values):
  values = [math.nan if v is None else v for v in values]
  return float(np.mean(values)) if values else math.nan


def aggregate(results: Dict[str, Any], settings: Dict[str, Sequence[str]],
              images: Sequence[str]) -> List[Dict[str, Any]]:
  """Mean RD point per codec and setting, over the given images that have a result.

  Args:
    results: the contents of results.json.
    settings: codec name -> setting keys to report, in any order.
    images: image names to average over (others in results.json are ignored).

  Returns:
    Rows with TABLE_COLUMNS plus `min_msssim_scales`, sorted by codec order then bpp.
  """
  rows = []
  for codec, keys in settings.items():
    table = results["codecs"].get(codec, {}).get("results", {})
    codec_rows = []
    for key in keys:
      entries = [table[key][name] for name in images if name in table.get(key, {})]
      if not entries:
        continue
      msssim = _mean(e["msssim"] for e in entries)
      codec_rows.append({
          "codec": codec,
          "setting": key,
          "images": len(entries),
          "bpp": _mean(e["bpp"] for e in entries),
          "psnr": _mean(e["psnr"] for e in entries),
          "msssim": msssim,
          "msssim_db": metrics.msssim_db(msssim),
          "encode_seconds": _mean(e["encode_seconds"] for e in entries),
          "decode_seconds": _mean(e["decode_seconds"] for e in entries),
          "min_msssim_scales": min(e["msssim_scales"] for e in entries),
      })
    rows.extend(sorted(codec_rows, key=lambda row: row["bpp"]))
  return rows


def curves_from_rows(rows: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, np.ndarray]]:
  """codec -> {"bpp", "psnr", "msssim_db"} arrays, from aggregated rows."""
  curves = {}
  for row in rows:
    curve = curves.setdefault(row["codec"], {key: [] for key in ("bpp", *QUALITIES)})
    for key, values in curve.items():
      values.append(row[key])
  return {codec: {k: np.asarray(v, np.float64) for k, v in curve.items()}
          for codec, curve in curves.items()}


def load_published(path_or_name: str) -> List[Dict[str, Any]]:
  """Published curves from a JSON file, or from the bundled file for a name such as "kodak".

  The file holds {"curves": [{"name", "source", "bpp": [...], "psnr": [...],
  "msssim": [...] (optional)}, ...]}. Returns curves with numpy arrays and an "msssim_db" key.
  """
  path = BUNDLED_PUBLISHED.get(path_or_name, Path(path_or_name))
  try:
    with open(path, encoding="utf-8") as f:
      curves = json.load(f)["curves"]
    published = []
    for curve in curves:
      bpp = np.asarray(curve["bpp"], np.float64)
      loaded = {"name": str(curve["name"]), "source": str(curve["source"]), "bpp": bpp}
      for key in ("psnr", "msssim"):
        values = curve.get(key)
        loaded[key] = (np.asarray(values, np.float64) if values is not None
                       else np.full_like(bpp, math.nan))
        if loaded[key].shape != bpp.shape:
          raise ValueError(f"curve {curve['name']}: {key} and bpp differ in length")
      loaded["msssim_db"] = np.asarray([metrics.msssim_db(v) for v in loaded["msssim"]])
      published.append(loaded)
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise errors.TflicError(f"cannot load published curves from {path}: {e}") from e
  return published


def bd_table(curves: Dict[str, Dict[str, np.ndarray]], anchor: str,
             published: Sequence[Dict[str, Any]] = (),
             method: str = bdrate.DEFAULT_METHOD) -> List[Dict[str, Any]]:
  """BD-rate and BD-quality (PSNR and MS-SSIM dB) of every curve against the anchor codec."""
  reference = curves[anchor]
  tests = [(codec, curve) for codec, curve in curves.items() if codec != anchor]
  tests += [(f"{p['name']} (published)", p) for p in published]
  rows = []
  for name, curve in tests:
    row, notes = {"codec": name}, []
    for quality, rate_column, quality_column in (
        ("psnr", "bd_rate_psnr", "bd_psnr"), ("msssim_db", "bd_rate_msssim", "bd_msssim_db")):
      if not np.any(np.isfinite(curve[quality])):  # A published curve may lack MS-SSIM.
        row[rate_column] = row[quality_column] = math.nan
        continue
      args = (reference["bpp"], reference[quality], curve["bpp"], curve[quality], method)
      for column, result in ((rate_column, bdrate.bd_rate(*args)),
                             (quality_column, bdrate.bd_quality(*args))):
        row[column] = result.value
        if result.note:
          notes.append(f"{column}: {result.note}")
    row["notes"] = "; ".join(notes)
    rows.append(row)
  return rows


def write_csv(rows: Sequence[Dict[str, Any]], columns: Sequence[str], path) -> None:
  """Writes rows as CSV with the given columns, numbers at full precision."""
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)


def _format(value, digits):
  if isinstance(value, str):
    return value
  return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _markdown_table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
  out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  out += ["| " + " | ".join(line) + " |" for line in lines]
  return "\n".join(out)


def markdown(rows, bd_rows, anchor: str, results: Dict[str, Any], images: Sequence[str],
             setting_labels: Dict[str, str], method: str,
             published: Sequence[Dict[str, Any]] = ()) -> str:
  """The Markdown report: RD table, BD table and the notes a reader needs to trust them."""
  parts = [f"# Rate-distortion on {Path(results['dataset']).name} ({len(images)} images)", "",
           "Means over images; bpp from the encoded bytes; PSNR on RGB uint8; MS-SSIM dB is "
           "-10 log10(1 - mean MS-SSIM); seconds are per image.", ""]
  parts.append(_markdown_table(
      ("codec", "setting", "images", "bpp", "PSNR [dB]", "MS-SSIM", "MS-SSIM [dB]",
       "encode [s]", "decode [s]"),
      [(r["codec"], f"{setting_labels.get(r['codec'], 'quality')} {r['setting']}",
        str(r["images"]), _format(r["bpp"], 4), _format(r["psnr"], 2),
        _format(r["msssim"], 4), _format(r["msssim_db"], 2),
        _format(r["encode_seconds"], 3), _format(r["decode_seconds"], 3)) for r in rows]))
  if bd_rows is not None:
    parts += ["", f"## BD against {anchor} ({method} interpolation)", "",
              "Negative BD-rate: fewer bits for the same quality. Published curves are other "
              "people's measurements, not ours.", ""]
    parts.append(_markdown_table(
        ("codec", "BD-rate PSNR [%]", "BD-PSNR [dB]", "BD-rate MS-SSIM [%]",
         "BD-MS-SSIM [dB]", "notes"),
        [(r["codec"], _format(r["bd_rate_psnr"], 2), _format(r["bd_psnr"], 3),
          _format(r["bd_rate_msssim"], 2), _format(r["bd_msssim_db"], 3), r["notes"])
         for r in bd_rows]))
  notes = []
  few_scales = sorted({r["codec"] for r in rows if r["min_msssim_scales"] < 5})
  if few_scales:
    notes.append("Some images are smaller than 161 px, so their MS-SSIM uses fewer than five "
                 f"scales (codecs: {', '.join(few_scales)}); not comparable to published MS-SSIM.")
  for name, reason in sorted(results.get("skipped_images", {}).items()):
    notes.append(f"Skipped unreadable image {name}: {reason}")
  for key, reason in sorted(results.get("failures", {}).items()):
    codec, _, image = key.split("/", 2)  # As the harness writes it: CODEC/SETTING/IMAGE.
    if codec in setting_labels and image in images:
      notes.append(f"Failed {key} (left out of the means): {reason}")
  for curve in published:
    notes.append(f"Published curve {curve['name']}: {curve['source']}")
  for codec in setting_labels:
    config = results["codecs"].get(codec, {}).get("config")
    if config:
      notes.append(f"{codec} options: `{json.dumps(config, sort_keys=True)}`")
  if notes:
    parts += ["", "## Notes", ""] + [f"- {note}" for note in notes]
  return "\n".join(parts) + "\n"


def plot(curves: Dict[str, Dict[str, np.ndarray]], quality: str, path, title: str,
         published: Sequence[Dict[str, Any]] = ()) -> None:
  """One RD chart (bpp against `quality`, a key of QUALITIES) of all codecs, saved as PNG."""
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  fig = figure.Figure(figsize=(7, 5), dpi=120)
  ax = fig.add_subplot()
  max_bpp = max((float(np.nanmax(c["bpp"])) for c in curves.values()), default=2.0)
  for codec, curve in curves.items():
    ax.plot(curve["bpp"], curve[quality], marker="o", markersize=4, label=codec)
  for curve in published:
    # Published sweeps often reach far higher rates; show them over the measured range only.
    keep = curve["bpp"] <= 1.2 * max_bpp
    if np.any(np.isfinite(curve[quality][keep])):
      ax.plot(curve["bpp"][keep], curve[quality][keep], linestyle="--", marker="x",
              markersize=4, alpha=0.8, label=f"{curve['name']} (published)")
  ax.set_xlabel("bits per pixel")
  ax.set_ylabel(QUALITIES[quality])
  ax.set_title(title)
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize="small")
  fig.tight_layout()
  fig.savefig(path)


def write_report(results: Dict[str, Any], out_dir, settings: Dict[str, Sequence[str]],
                 setting_labels: Dict[str, str], images: Sequence[str], anchor: str,
                 published: Sequence[Dict[str, Any]] = (),
                 method: str = bdrate.DEFAULT_METHOD) -> Dict[str, Path]:
  """Writes rd_table.csv, rd_table.md, bd.csv (if the anchor has results) and the plots.

  Returns the written paths by kind.
  """
  out_dir = Path(out_dir)
  rows = aggregate(results, settings, images)
  curves = curves_from_rows(rows)
  paths = {"csv": out_dir / "rd_table.csv", "markdown": out_dir / "rd_table.md",
           "plot_psnr": out_dir / "rd_psnr.png", "plot_msssim": out_dir / "rd_msssim.png"}
  write_csv(rows, TABLE_COLUMNS, paths["csv"])
  bd_rows = None
  if anchor in curves:
    bd_rows = bd_table(curves, anchor, published, method)
    paths["bd_csv"] = out_dir / "bd.csv"
    write_csv(bd_rows, BD_COLUMNS, paths["bd_csv"])
  text = markdown(rows, bd_rows, anchor, results, images, setting_labels, method, published)
  paths["markdown"].write_text(text, encoding="utf-8")
  dataset = f"{Path(results['dataset']).name} ({len(images)} images)"
  plot(curves, "psnr", paths["plot_psnr"], f"{dataset}: PSNR", published)
  plot(curves, "msssim_db", paths["plot_msssim"], f"{dataset}: MS-SSIM", published)
  return paths
