"""Writes the results tables of README.md and the MODEL_CARD from the committed reports.

    python tools/readme_tables.py           # rewrites every generated block
    python tools/readme_tables.py --check   # exit status 1 if a block differs (a test runs it)

A generated block sits between marker comments that name its report directory, a folder
written by `tflic eval` (its results.json):

    <!-- results: reports/bundled_medium_hifi_kodak -->    the model's RD table and a BD-rate line
    ...
    <!-- /results -->
    <!-- bd-rates: reports/bundled_medium_hifi_kodak -->   BD-rate and BD-PSNR against each anchor
    ...
    <!-- /bd-rates -->

Means are over the report's images, as in its rd_table.md. BD figures are computed as
`tflic eval --anchor=CODEC` computes them (tflic.evaluation.report, PCHIP); the figure against
JPEG must equal the report's own bd.csv, or the script stops. Imports no TensorFlow.
"""

import argparse
import csv
import difflib
import json
import math
import pathlib
import re
import sys
import textwrap

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tflic.evaluation import bdrate  # pylint: disable=g-import-not-at-top,wrong-import-position
from tflic.evaluation import report  # pylint: disable=g-import-not-at-top,wrong-import-position

# The files that may hold generated blocks.
FILES = ("README.md", "tflic/bundled/MODEL_CARD.md", "docs/*.md")
MODEL = "tflic"
# Anchors of the BD figures, in the order shown, and their names.
ANCHORS = {"jpeg": "JPEG 4:2:0", "jpeg444": "JPEG 4:4:4", "webp": "WebP",
           "jpeg2000": "JPEG 2000", "avif": "AVIF"}
BLOCK = re.compile(r"(<!-- (results|bd-rates): (\S+) -->\n)(.*?)(<!-- /\2 -->)", re.DOTALL)


class ReportError(Exception):
  """A report that cannot back a block."""


def _pct(value):
  return "n/a" if not math.isfinite(value) else f"{value:+.1f}%"


def _db(value):
  return "n/a" if not math.isfinite(value) else f"{value:+.2f} dB"


def _quality_label(setting):
  return f"{float(setting):g}"


class Report:
  """A `tflic eval` report folder: the model's mean RD points and its BD figures."""

  def __init__(self, directory):
    self.directory = directory
    path = REPO / directory / "results.json"
    try:
      with open(path, encoding="utf-8") as f:
        self.results = json.load(f)
    except (OSError, ValueError) as e:
      raise ReportError(f"{directory}: cannot read results.json: {e}") from e
    codecs = self.results.get("codecs", {})
    missing = [c for c in (MODEL, *ANCHORS) if c not in codecs]
    if missing:
      raise ReportError(f"{directory}: results.json has no {', '.join(missing)} results")
    settings = {codec: list(codecs[codec]["results"]) for codec in (MODEL, *ANCHORS)}
    # The model's images: those the report's table averages over.
    self.images = sorted({name for table in codecs[MODEL]["results"].values()
                          for name in table})
    self.rows = report.aggregate(self.results, settings, self.images)
    self.curves = report.curves_from_rows(self.rows)
    self._check_against_bd_csv()

  def model_rows(self):
    return [row for row in self.rows if row["codec"] == MODEL]

  def bd(self, anchor):
    """{bd_rate_psnr, bd_psnr, bd_rate_msssim, overlap} of the model against `anchor`."""
    row, = report.bd_table({anchor: self.curves[anchor], MODEL: self.curves[MODEL]}, anchor)
    row["overlap"] = bdrate._overlap(  # pylint: disable=protected-access
        self.curves[anchor]["psnr"], self.curves[MODEL]["psnr"])
    return row

  def _check_against_bd_csv(self):
    path = REPO / self.directory / "bd.csv"
    if not path.exists():
      return
    with open(path, encoding="utf-8", newline="") as f:
      stored = {row["codec"]: row for row in csv.DictReader(f)}
    if MODEL not in stored:
      return
    computed = self.bd("jpeg")
    for column in ("bd_rate_psnr", "bd_psnr"):
      if not math.isclose(float(stored[MODEL][column]), computed[column], abs_tol=1e-6):
        raise ReportError(f"{self.directory}: bd.csv's {column} of {MODEL} is "
                          f"{stored[MODEL][column]}, results.json gives {computed[column]}: "
                          "re-run the report's `tflic eval` command")


def render_results(rep):
  """The model's RD table (means over the images) and a line of BD-rates."""
  lines = ["| quality | bpp | PSNR [dB] | MS-SSIM | encode [s] | decode [s] |",
           "|---|---|---|---|---|---|"]
  for row in rep.model_rows():
    lines.append(f"| {_quality_label(row['setting'])} | {row['bpp']:.3f} | {row['psnr']:.2f} "
                 f"| {row['msssim']:.3f} | {row['encode_seconds']:.2f} "
                 f"| {row['decode_seconds']:.2f} |")
  bd = {anchor: rep.bd(anchor) for anchor in ANCHORS}
  others = [f"{_pct(bd[a]['bd_rate_psnr'])} against {ANCHORS[a]}" for a in ANCHORS if a != "jpeg"]
  line = (f"BD-rate (PSNR) over the {len(rep.images)} images: "
          f"**{_pct(bd['jpeg']['bd_rate_psnr'])} against {ANCHORS['jpeg']}**, "
          + ", ".join(others[:-1]) + f" and {others[-1]}; in MS-SSIM "
          f"{_pct(bd['jpeg']['bd_rate_msssim'])} against {ANCHORS['jpeg']} and "
          f"{_pct(bd['webp']['bd_rate_msssim'])} against {ANCHORS['webp']} "
          "(negative: fewer bits at equal quality).")
  lines += ["", textwrap.fill(line, width=90, break_on_hyphens=False)]
  return "\n".join(lines) + "\n"


def render_bd_rates(rep):
  """BD-rate and BD-PSNR of the model against each anchor, with the curves' overlap."""
  lines = ["| anchor | BD-rate (PSNR) | BD-PSNR | BD-rate (MS-SSIM) | PSNR overlap |",
           "|---|---|---|---|---|"]
  for anchor, name in ANCHORS.items():
    bd = rep.bd(anchor)
    lines.append(f"| {name} | {_pct(bd['bd_rate_psnr'])} | {_db(bd['bd_psnr'])} "
                 f"| {_pct(bd['bd_rate_msssim'])} | {bd['overlap']:.0%} |")
  return "\n".join(lines) + "\n"


RENDERERS = {"results": render_results, "bd-rates": render_bd_rates}


def files():
  for pattern in FILES:
    yield from sorted(REPO.glob(pattern))


def render_file(text, reports):
  """`text` with every generated block rendered from its report."""
  def block(match):
    directory = match.group(3).rstrip("/")
    if directory not in reports:
      reports[directory] = Report(directory)
    return match.group(1) + RENDERERS[match.group(2)](reports[directory]) + match.group(5)
  return BLOCK.sub(block, text)


def blocks(text):
  """(kind, report directory) of each generated block in `text`."""
  return [(m.group(2), m.group(3).rstrip("/")) for m in BLOCK.finditer(text)]


def check():
  """Differences between the files and what they should hold, as unified diffs."""
  reports, diffs = {}, []
  for path in files():
    text = path.read_text(encoding="utf-8")
    expected = render_file(text, reports)
    if expected != text:
      name = str(path.relative_to(REPO))
      diffs.append("".join(difflib.unified_diff(
          text.splitlines(True), expected.splitlines(True), name, name + " (rendered)")))
  return diffs


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--check", action="store_true",
                      help="do not write; exit 1 if a generated block differs from its report")
  args = parser.parse_args(argv)
  try:
    if args.check:
      diffs = check()
      for diff in diffs:
        sys.stdout.write(diff)
      if diffs:
        print("generated blocks differ from their reports: run python tools/readme_tables.py",
              file=sys.stderr)
      return 1 if diffs else 0
    reports = {}
    for path in files():
      text = path.read_text(encoding="utf-8")
      rendered = render_file(text, reports)
      if rendered != text:
        path.write_text(rendered, encoding="utf-8")
        print(f"wrote {path.relative_to(REPO)}")
  except ReportError as e:
    print(f"readme_tables: error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
