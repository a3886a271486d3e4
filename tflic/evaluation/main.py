"""`tflic eval`: rate-distortion evaluation of codecs on a directory of images.

  tflic eval --dataset=DIR --out=DIR [--codecs=jpeg,webp,avif,jpeg2000] [--model=PATH]
             [--qualities=CODEC:Q1,Q2,...]... [--anchor=jpeg] [--published=kodak]

--dataset=tfds:NAME [--tfds_data_dir=DIR] reads a tensorflow-datasets dataset prepared on
disk (`tflic datasets prepare NAME`) instead: its test split if it has one, else all its
images, named by their file_name feature; results.json records the dataset as tfds:NAME.

Writes OUT/results.json (every measurement; re-running resumes from it), OUT/rd_table.csv,
OUT/rd_table.md, OUT/bd.csv and the plots OUT/rd_psnr.png and OUT/rd_msssim.png.
"""

import sys
from typing import Dict, List, Sequence

from absl import flags

from tflic import common_flags
from tflic import errors
from tflic.evaluation import bdrate
from tflic.evaluation import codecs as codecs_lib
from tflic.evaluation import harness
from tflic.evaluation import report
from tflic.evaluation import visual

_DATASET = common_flags.DATASET
_OUT = common_flags.OUT  # results.json, tables and plots
_CODECS = flags.DEFINE_list(
    "codecs", ["jpeg", "webp", "avif", "jpeg2000"],
    f"Codecs to evaluate, from: {', '.join(sorted(codecs_lib.CODECS))}. Codecs whose tools are "
    "missing are skipped with a notice.")
_MODEL = common_flags.MODEL
_REFINE_STEPS = common_flags.REFINE_STEPS
_QUALITIES = flags.DEFINE_multi_string(
    "qualities", [],
    "Settings to sweep, as CODEC:Q1,Q2,... (repeat the flag for several codecs), or Q1,Q2,... "
    "for every codec not named. Defaults to each codec's own sweep, roughly 0.1-1.5 bpp.")
_ANCHOR = flags.DEFINE_string("anchor", "jpeg", "Codec the BD-rates are measured against.")
_BD_METHOD = flags.DEFINE_enum("bd_method", bdrate.DEFAULT_METHOD, ["pchip", "akima", "cubic"],
                               "Interpolation of the BD computation.")
_PUBLISHED = flags.DEFINE_string(
    "published", None,
    "Published reference curves to draw and BD-compare: 'kodak' for the bundled Kodak file or "
    "a JSON path in the same format.")
_RESUME = flags.DEFINE_bool("resume", True, "Keep and skip measurements already in "
                            "OUT/results.json; --noresume starts afresh.")
_VISUAL = flags.DEFINE_list(
    "visual", [],
    "Images (file names) to show side by side: the same detailed crop from tflic near "
    "--visual_bpp and from each other codec at the file size nearest tflic's, with bytes "
    "and PSNR under each; OUT/visual_NAME.png, linked from rd_table.md.")
_VISUAL_BPP = flags.DEFINE_float("visual_bpp", 0.25, "tflic's rate in --visual sheets.")
_PROGRESS = common_flags.PROGRESS
_TFDS_DATA_DIR = common_flags.TFDS_DATA_DIR
common_flags.declare_key_flags(__name__, "dataset", "out", "model", "progress",
                               "refine_steps", "tfds_data_dir")


def _notice(message):
  print(f"tflic eval: {message}", file=sys.stderr)


def parse_qualities(values: Sequence[str], codec_names: Sequence[str]) -> Dict[str, List[float]]:
  """codec -> settings from --qualities values ("CODEC:Q1,Q2" or "Q1,Q2" for the rest)."""
  explicit, default = {}, None
  for value in values:
    codec, _, numbers = value.rpartition(":")
    try:
      settings = [float(q) for q in numbers.split(",") if q.strip()]
    except ValueError:
      raise errors.TflicError(f"--qualities={value}: settings must be numbers") from None
    if not settings:
      raise errors.TflicError(f"--qualities={value}: no settings")
    if not codec:
      default = settings
    elif codec not in codec_names:
      raise errors.TflicError(f"--qualities={value}: {codec} is not in --codecs")
    else:
      explicit[codec] = settings
  return {name: explicit.get(name, default) for name in codec_names}


def _visual_sheets(images, codecs, results, readable):
  """Writes the --visual side-by-side PNGs; returns their paths."""
  by_name = {c.name: c for c in codecs}
  sheets = []
  for path in images:
    if path.name not in _VISUAL.value or path.name not in readable:
      continue
    chosen = visual.choose(results, path.name, list(by_name), _VISUAL_BPP.value)
    if not chosen:
      _notice(f"--visual: no tflic result for {path.name}")
      continue
    out = f"{_OUT.value}/visual_{path.stem}.png"
    sheets.append(visual.comparison(harness.load_image(path), path.name, chosen, by_name,
                                    results, out))
  return sheets


def main(argv):
  """Runs the evaluation; argv is absl's (program name first)."""
  if len(argv) > 1:
    raise errors.TflicError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _DATASET.value:
    raise errors.TflicError("--dataset=DIR (or tfds:NAME) is required")
  if not _OUT.value:
    raise errors.TflicError("--out=DIR is required")
  names = list(dict.fromkeys(_CODECS.value))
  for name in names + [_ANCHOR.value]:
    if name not in codecs_lib.CODECS:
      raise errors.TflicError(f"unknown codec {name!r}; known: "
                              f"{', '.join(sorted(codecs_lib.CODECS))}")
  if _DATASET.value.startswith("tfds:"):
    images = harness.tfds_images(_DATASET.value, _TFDS_DATA_DIR.value)
  else:
    images = harness.list_images(_DATASET.value)
  unknown = sorted(set(_VISUAL.value) - {p.name for p in images})
  if unknown:
    raise errors.TflicError(f"--visual: {', '.join(unknown)} not in --dataset")
  if _VISUAL.value and "tflic" not in names:
    raise errors.TflicError("--visual compares against tflic: add it to --codecs")
  qualities = parse_qualities(_QUALITIES.value, names)
  published = report.load_published(_PUBLISHED.value) if _PUBLISHED.value else []

  codecs = []
  for name in names:
    reason = codecs_lib.CODECS[name].unavailable_reason()
    if reason:
      _notice(f"skipping codec {name}: {reason}")
      continue
    codecs.append(codecs_lib.make_codec(name, qualities[name], model_path=_MODEL.value,
                                        refine_steps=_REFINE_STEPS.value))
  if not codecs:
    raise errors.TflicError("none of the requested codecs can run here")
  if _ANCHOR.value not in [c.name for c in codecs]:
    _notice(f"anchor {_ANCHOR.value} is not evaluated, so there are no BD figures")

  results = harness.Results.open(_OUT.value, _DATASET.value, resume=_RESUME.value)
  summary = harness.evaluate(images, codecs, results, progress=_PROGRESS.value)
  readable = [p.name for p in images if p.name not in summary.skipped_images]
  paths = report.write_report(
      results.data, _OUT.value,
      settings={c.name: [c.setting_key(s) for s in c.settings] for c in codecs},
      setting_labels={c.name: c.setting_label for c in codecs}, images=readable,
      anchor=_ANCHOR.value, published=published, method=_BD_METHOD.value)

  sheets = _visual_sheets(images, codecs, results.data, readable)
  if sheets:
    with open(paths["markdown"], "a", encoding="utf-8") as f:
      f.write("\n## Visual comparison\n\n" + "\n".join(
          f"![{p.stem}]({p.name})" for p in sheets) + "\n")
  print(f"{summary.measured} measured, {summary.reused} resumed from {results.path}, "
        f"{summary.failed} failed, {len(summary.skipped_images)} images skipped")
  print(paths["markdown"].read_text(encoding="utf-8"))
  print("wrote " + ", ".join(str(p) for p in [results.path, *paths.values(), *sheets]))
  return 0
