r"""`tflic compress` and `tflic decompress` from the shell: wall time and peak memory per
image, source trees side by side, and a folder in one call.

  python benchmarks/cli_speed.py --tree=/path/to/old/checkout --tree=. --out=reports/cli_speed

Every image is compressed and then decompressed by each tree in turn (`python -m tflic.cli`
with the tree first on the path, one image per process, under `/usr/bin/time -v`), so
whatever else the machine does falls on the trees alike. Then the last tree compresses
all the images in one call: its wall time is set against the sum of the in-process
encode times that call prints plus one start-up (the median wall time of a one-image
call minus its in-process time). Printed and written to --out (results.json, report.md):
the median wall time and peak RSS per tree and command, the ratio to the first tree, and
what else used the CPU meanwhile. Each tree runs with its defaults (and --quality).
"""

import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

import cpu_use  # benchmarks/cpu_use.py

_TREE = flags.DEFINE_multi_string("tree", [], "Source trees (their `tflic` package), in "
                                  "order; ratios are to the first. Default: this one.")
_IMAGES = flags.DEFINE_string("images", "../shared/data/kodak", "Folder of PNG images.")
_QUALITY = flags.DEFINE_float("quality", 0.5, "--quality of every compress.")
_LIMIT = flags.DEFINE_integer("limit", None, "Only the first N images.")
_OUT = flags.DEFINE_string("out", None, "Folder for results.json and report.md.")

# `IN -> OUT: WxH, N bytes, X bpp, S s`, the line `tflic compress` prints per file.
_SECONDS = re.compile(r" ([\d.]+) s$")


def _timed(tree, args):
  """(wall seconds, peak RSS in MB, stdout) of `python -m tflic.cli ARGS` in `tree`."""
  env = dict(os.environ, PYTHONPATH=tree, TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "tflic.cli", *args],
                          cwd=tree, env=env, capture_output=True, text=True, check=False)
  if result.returncode != 0:
    raise RuntimeError(f"{tree}: tflic {' '.join(args)} failed:\n{result.stderr[-2000:]}")
  fields = dict(line.strip().rsplit(": ", 1) for line in result.stderr.splitlines()
                if line.startswith("\t") and ": " in line)
  wall = fields["Elapsed (wall clock) time (h:mm:ss or m:ss)"].split(":")
  seconds = sum(float(part) * 60**i for i, part in enumerate(reversed(wall)))
  return seconds, int(fields["Maximum resident set size (kbytes)"]) / 1024, result.stdout


def _in_process_seconds(stdout):
  return [float(_SECONDS.search(line).group(1)) for line in stdout.splitlines()
          if _SECONDS.search(line)]


def main(argv):
  del argv
  trees = [os.path.abspath(t) for t in _TREE.value] or [os.getcwd()]
  images = sorted(pathlib.Path(_IMAGES.value).resolve().glob("*.png"))[:_LIMIT.value]
  runs = {tree: {"compress": [], "decompress": []} for tree in trees}
  before, start = cpu_use.cpu_times(), time.time()
  with tempfile.TemporaryDirectory(prefix="cli-speed-") as scratch:
    for image in images:
      for i, tree in enumerate(trees):
        coded = os.path.join(scratch, f"{i}_{image.stem}.tflic")
        decoded = os.path.join(scratch, f"{i}_{image.stem}.png")
        for command, args in [("compress", [f"--quality={_QUALITY.value}", str(image), coded]),
                              ("decompress", [coded, decoded])]:
          wall, rss, stdout = _timed(tree, [command, *args])
          runs[tree][command].append({"image": image.name, "wall_s": wall, "peak_rss_mb": rss,
                                      "in_process_s": (_in_process_seconds(stdout) or [None])[0],
                                      "bytes": os.path.getsize(coded)})
          print(f"{image.name} {tree} {command}: {wall:.2f} s, {rss:.0f} MB", flush=True)
    singles = time.time() - start
    # One call for the whole folder, with the last tree.
    tree = trees[-1]
    folder = os.path.join(scratch, "folder")
    os.mkdir(folder)
    wall, rss, stdout = _timed(tree, ["compress", f"--quality={_QUALITY.value}",
                                      *map(str, images), folder])
  compress = runs[tree]["compress"]
  startup = statistics.median(r["wall_s"] - r["in_process_s"] for r in compress
                              if r["in_process_s"] is not None)
  encode_sum = sum(_in_process_seconds(stdout))
  batch = {"tree": tree, "images": len(images), "wall_s": wall, "peak_rss_mb": rss,
           "sum_in_process_s": encode_sum, "startup_s": startup,
           "ratio_to_sum_plus_startup": wall / (encode_sum + startup)}
  others = cpu_use.others(before, cpu_use.cpu_times(), {os.getpid()})
  summary = {}
  for tree in trees:
    for command in ("compress", "decompress"):
      rows = runs[tree][command]
      summary[f"{tree} {command}"] = {
          "median_wall_s": statistics.median(r["wall_s"] for r in rows),
          "max_wall_s": max(r["wall_s"] for r in rows),
          "median_peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rows),
          "max_peak_rss_mb": max(r["peak_rss_mb"] for r in rows),
          "median_in_process_s": statistics.median(
              [r["in_process_s"] for r in rows if r["in_process_s"] is not None] or [0.0])}
  lines = [f"{len(images)} images of {_IMAGES.value}, --quality={_QUALITY.value}, one image "
           f"per call, trees alternating ({singles:.0f} s); then {len(images)} images in one "
           "call.", "", "| tree | command | median wall s | max wall s | median peak RSS MB | "
           "max peak RSS MB | median in-process s | speed-up vs first |", "|" + "---|" * 8]
  for key, row in summary.items():
    tree, command = key.rsplit(" ", 1)
    first = summary[f"{trees[0]} {command}"]["median_wall_s"]
    lines.append(f"| {tree} | {command} | {row['median_wall_s']:.2f} | {row['max_wall_s']:.2f} "
                 f"| {row['median_peak_rss_mb']:.0f} | {row['max_peak_rss_mb']:.0f} | "
                 f"{row['median_in_process_s']:.2f} | {first / row['median_wall_s']:.2f}x |")
  lines += ["", f"One call, {len(images)} images ({batch['tree']}): {batch['wall_s']:.1f} s "
            f"wall, peak RSS {batch['peak_rss_mb']:.0f} MB; in-process encode times sum to "
            f"{encode_sum:.1f} s, start-up {startup:.2f} s: "
            f"{batch['ratio_to_sum_plus_startup']:.2f}x their sum.", "",
            "Beside the runs: " + cpu_use.describe(others)]
  report = "\n".join(lines)
  print(report)
  if _OUT.value:
    os.makedirs(_OUT.value, exist_ok=True)
    with open(os.path.join(_OUT.value, "results.json"), "w", encoding="utf-8") as f:
      json.dump({"runs": runs, "summary": summary, "batch": batch, "others_cpu_s": others,
                 "load_average": os.getloadavg()}, f, indent=2)
    with open(os.path.join(_OUT.value, "report.md"), "w", encoding="utf-8") as f:
      f.write(report + "\n")


if __name__ == "__main__":
  app.run(main)
