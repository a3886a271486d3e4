r"""Decodes thousands of hostile .tflic files and reports what the decoder did with each.

  python tools/fuzz_decoder.py --cases=10000 --out=reports/hostile_files
  python tools/fuzz_decoder.py --decoder=lite --lite_model=DIR --cases=2000 --out=...

Clean files are made from Kodak crops of several sizes with the model (bundled by
default), then mutated the ways an attacker would: header bytes, header fields with the
checksum recomputed (declared sizes up to 65535 x 65535), stream bit flips, byte sets,
insertions, deletions and truncations with lengths and checksum fixed, zeroed stream
tails (the escape-prefix hang of tfc's decoder), empty and random streams, spliced files
and random bytes. Each file is decoded in a worker process that is killed past a hard
limit. Outcomes by kind:

- error: a one-line TflicError (grouped by message);
- image, same: decoded to the clean file's image (a mutation the streams never read);
- image, edited header: a consistent header edit (size or quality with the checksum
  recomputed) decoded to an image: a valid file, as an attacker may write any;
- WRONG image: a stream mutation decoded to another image without an error;
- slow: took more than --slowdown x the clean decode time of the declared size (with a
  floor of --min_limit seconds for scheduling noise);
- memory: its peak memory above the worker's resting size was over --memory_factor x
  what a clean decode of the declared size needs (+ --memory_slack_mib);
- crash: the worker died; exception: an exception other than TflicError.

The last five are failures. The clean time and memory of a declared size come from a
linear fit over the clean files' own decodes.
"""

import collections
import hashlib
import json
import multiprocessing
import os
import queue
import random
import sys
import time

from absl import app
from absl import flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hostile_files  # pylint: disable=g-import-not-at-top,wrong-import-position

_CASES = flags.DEFINE_integer("cases", 10000, "Hostile files to decode.")
_DECODER = flags.DEFINE_enum("decoder", "savedmodel", ["savedmodel", "lite"],
                             "The SavedModel codec (tflic decompress) or tflic-lite.")
_MODEL = flags.DEFINE_string("model", None, "SavedModel (default: the bundled model).")
_LITE_MODEL = flags.DEFINE_string("lite_model", None, "LiteRT export, for --decoder=lite.")
_KODAK = flags.DEFINE_string("kodak", "../shared/data/kodak", "Folder of source photos.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Decoding processes.")
_MAX_PIXELS = flags.DEFINE_integer("max_pixels", 1 << 20, "The decoders' pixel limit.")
_SLOWDOWN = flags.DEFINE_float("slowdown", 10.0, "Slow: over this x the clean time.")
_MIN_LIMIT = flags.DEFINE_float("min_limit", 2.0, "Floor of the slow limit (seconds).")
_HARD_LIMIT = flags.DEFINE_float(
    "hard_limit", 60.0, "Kill a worker after this many seconds, or 1.5 x the slow limit.")
_MEMORY_FACTOR = flags.DEFINE_float("memory_factor", 2.0, "Memory: over this x clean.")
_MEMORY_SLACK = flags.DEFINE_integer("memory_slack_mib", 64, "Allocator noise allowance.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed of the mutations.")
_OUT = flags.DEFINE_string("out", None, "Report directory (results.json, report.md).")

SEED_SIZES = ((16, 16), (32, 48), (64, 64), (96, 128), (128, 128), (256, 256))
# Clean decodes that calibrate the time model only (not mutated: they decode slowly):
# decode time grows with the coding steps (h + w - 1 per group in wavefront order) and
# with the latent positions (h * w), so strips and a larger square pin both down.
CALIBRATION_SIZES = ((16, 1024), (1024, 16), (512, 512))
SEED_QUALITIES = (0.0, 0.5, 1.0)
FAILURES = ("WRONG image", "slow", "memory", "crash", "exception")


# ------------------------------------------------------------------ worker side --

def _status(field):
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) * 1024
  return 0


def _worker(connection, decoder_kind, model, lite_model, max_pixels):
  """Serves ("compress", image, quality) and ("decode", bytes) requests."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  from tflic import errors  # pylint: disable=g-import-not-at-top
  if decoder_kind == "lite":
    from tflic.lite import decoder as lite_decoder  # pylint: disable=g-import-not-at-top
    lite = lite_decoder.Decoder(lite_model)
    decode = lambda data: lite.decompress(data, max_pixels=max_pixels)
    compress = None
  else:
    from tflic.codec import tf_codec  # pylint: disable=g-import-not-at-top
    the_codec = tf_codec.load(model or tf_codec.default_model_path())
    decode = lambda data: the_codec.decompress(data, max_pixels=max_pixels)
    compress = the_codec.compress
  connection.send("ready")
  while True:
    request = connection.recv()
    if request[0] == "compress":
      connection.send(compress(request[1], request[2]))
      continue
    data = request[1]
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")  # resets VmHWM, the peak resident size, to the current size
    resting = _status("VmRSS")
    start = time.perf_counter()
    try:
      image = decode(data)
      outcome = ("image", hashlib.sha1(image.tobytes() + str(image.shape).encode()).hexdigest())
    except errors.TflicError as e:
      outcome = ("error", str(e).splitlines()[0] if str(e) else "")
    except Exception as e:  # pylint: disable=broad-except
      outcome = ("exception", f"{type(e).__name__}: {str(e).splitlines()[:1]}")
    seconds = time.perf_counter() - start
    connection.send((*outcome, seconds, max(0, _status("VmHWM") - resting)))


class Worker:
  """A decoding process, restarted after a kill."""

  def __init__(self, context, kind, warmup=None):
    self.context, self.kind, self.warmup = context, kind, warmup
    self.process = None
    self.start()

  def start(self):
    parent, child = self.context.Pipe()
    self.process = self.context.Process(
        target=_worker, args=(child, self.kind, _MODEL.value, _LITE_MODEL.value,
                              _MAX_PIXELS.value), daemon=True)
    self.process.start()
    self.connection = parent
    if not parent.poll(600) or parent.recv() != "ready":
      raise RuntimeError("worker did not start")
    if self.warmup is not None:  # the first call of a loaded model instantiates it
      parent.send(("decode", self.warmup))
      parent.recv()

  def call(self, request, timeout):
    """The worker's answer, or None after killing it at the timeout or if it died."""
    self.connection.send(request)
    if self.connection.poll(timeout):
      try:
        return self.connection.recv()
      except EOFError:
        pass
    self.process.kill()
    self.process.join()
    code = self.process.exitcode
    self.start()
    return ("crash", f"exit code {code}") if code not in (-9, None) else None


# -------------------------------------------------------------------- driver --

def _features(height, width):
  """(1, coding steps, latent positions, pixels) of an image size: what decoding costs."""
  h, w = -(-height // 16), -(-width // 16)
  return (1.0, (h + w - 1) * (h > 0), h * w, height * width)


def _fit(sizes, values, columns):
  """A nonnegative linear model of values over some of the size features."""
  a = np.array([[_features(*s)[c] for c in columns] for s in sizes])
  coefficients = np.linalg.lstsq(a, np.asarray(values, np.float64), rcond=None)[0]
  coefficients = np.maximum(coefficients, 0)
  floor = float(np.min(values))
  return lambda size: max(floor, float(np.dot([_features(*size)[c] for c in columns],
                                              coefficients)))


def main(argv):
  del argv
  from PIL import Image  # pylint: disable=g-import-not-at-top
  context = multiprocessing.get_context("spawn")
  if _DECODER.value == "lite" and not _LITE_MODEL.value:
    raise app.UsageError("--decoder=lite needs --lite_model")
  # Seeds are written by the SavedModel codec (the lite package has no encoder).
  encoder = Worker(context, "savedmodel")
  photos = sorted(os.path.join(_KODAK.value, f) for f in os.listdir(_KODAK.value)
                  if f.endswith(".png"))
  clean, seed_info = [], []
  sizes = [(s, q) for s in SEED_SIZES for q in SEED_QUALITIES]
  sizes += [(s, 0.5) for s in CALIBRATION_SIZES]
  for i, ((height, width), quality) in enumerate(sizes):
    photo = np.asarray(Image.open(photos[i % len(photos)]).convert("RGB"))
    clean.append(encoder.call(("compress", photo[:height, :width], quality), 600))
    seed_info.append(dict(height=height, width=width, quality=quality, bytes=len(clean[-1]),
                          mutated=(height, width) in SEED_SIZES))
  encoder.process.kill()
  seeds = [data for data, info in zip(clean, seed_info) if info["mutated"]]
  workers = [Worker(context, _DECODER.value, warmup=seeds[0])
             for _ in range(max(1, _WORKERS.value))]
  # Clean decodes: the reference images and the time and memory model.
  clean_images = []
  for data, info in zip(clean, seed_info):
    answers = [workers[0].call(("decode", data), 600) for _ in range(3)]
    assert all(a[0] == "image" for a in answers), answers
    clean_images.append(answers[0][1])
    info.update(seconds=float(np.median([a[2] for a in answers])),
                peak_bytes=int(max(a[3] for a in answers)))
  sizes = [(i["height"], i["width"]) for i in seed_info]
  clean_time = _fit(sizes, [i["seconds"] for i in seed_info], (0, 1, 2))
  clean_memory = _fit(sizes, [i["peak_bytes"] for i in seed_info], (0, 3))

  # Past the slow limit a case has failed anyway; the kill comes a little later.
  hard_limit = lambda size: max(_HARD_LIMIT.value, 1.5 * _SLOWDOWN.value * clean_time(size))
  rng = random.Random(_SEED.value)
  cases = [hostile_files.mutate(rng, seeds) for _ in range(_CASES.value)]
  results = [None] * len(cases)
  pending = collections.deque(range(len(cases)))
  busy = {}  # worker index -> (case index, start time)
  # One case per worker at a time; the parent enforces the hard limit.
  for w, worker in enumerate(workers):
    if pending:
      i = pending.popleft()
      worker.connection.send(("decode", cases[i][2]))
      busy[w] = (i, time.perf_counter())
  started, reported = time.perf_counter(), 0
  while busy:
    for w, (i, start) in list(busy.items()):
      worker = workers[w]
      answer = None
      if worker.connection.poll(0.01):
        try:
          answer = worker.connection.recv()
        except EOFError:
          answer = ("crash", "worker died", time.perf_counter() - start, 0)
      elif not worker.process.is_alive():
        answer = ("crash", f"exit code {worker.process.exitcode}",
                  time.perf_counter() - start, 0)
      elif time.perf_counter() - start > hard_limit(cases[i][3]):
        answer = ("killed", f"over {hard_limit(cases[i][3]):.0f} s",
                  time.perf_counter() - start, 0)
      if answer is None:
        continue
      if answer[0] in ("crash", "killed"):
        worker.process.kill()
        worker.process.join()
        worker.start()
      results[i] = answer
      del busy[w]
      if pending:
        j = pending.popleft()
        worker.connection.send(("decode", cases[j][2]))
        busy[w] = (j, time.perf_counter())
    done = sum(r is not None for r in results)
    if done - reported >= 500:
      reported = done
      print(f"{done}/{len(cases)} in {time.perf_counter() - started:.0f} s", flush=True)
  for worker in workers:
    worker.process.kill()

  rows, outcomes = [], collections.Counter()
  by_kind = collections.defaultdict(collections.Counter)
  messages = collections.Counter()
  for (kind, index, data, declared), (what, detail, seconds, peak) in zip(cases, results):
    limit = max(_MIN_LIMIT.value, _SLOWDOWN.value * clean_time(declared))
    memory_limit = (_MEMORY_FACTOR.value * clean_memory(declared) +
                    _MEMORY_SLACK.value * 2**20)
    if what == "killed":
      outcome = "slow"
    elif what in ("crash", "exception"):
      outcome = what
    elif seconds > limit:
      outcome = "slow"
    elif peak > memory_limit:
      outcome = "memory"
    elif what == "error":
      outcome = "error"
      messages[detail[:90]] += 1
    elif detail == clean_images[index]:
      outcome = "image, same"
    elif kind in hostile_files.HEADER_EDITS:
      outcome = "image, edited header"
    else:
      outcome = "WRONG image"
    outcomes[outcome] += 1
    by_kind[kind][outcome] += 1
    rows.append(dict(kind=kind, seed=index, bytes=len(data), declared_size=declared,
                     outcome=outcome, detail=detail, seconds=round(seconds, 4),
                     peak_bytes=int(peak)))
  seconds = [r["seconds"] for r in rows]
  print(dict(outcomes))
  failures = sum(outcomes[f] for f in FAILURES)
  print(f"failures: {failures}; slowest case {max(seconds):.2f} s")
  if _OUT.value:
    _write_report(rows, outcomes, by_kind, messages, seed_info, failures)
  return 1 if failures else 0


def _write_report(rows, outcomes, by_kind, messages, seed_info, failures):
  os.makedirs(_OUT.value, exist_ok=True)
  settings = {name: flags.FLAGS[name].value for name in (
      "cases", "decoder", "model", "lite_model", "workers", "max_pixels", "slowdown",
      "min_limit", "hard_limit", "memory_factor", "memory_slack_mib", "seed")}
  with open(os.path.join(_OUT.value, "results.json"), "w") as f:
    json.dump(dict(settings=settings, seeds=seed_info, outcomes=dict(outcomes),
                   by_kind={k: dict(v) for k, v in by_kind.items()},
                   failing_cases=[r for r in rows if r["outcome"] in FAILURES]), f, indent=1)
  names = ["error", "image, same", "image, edited header", *FAILURES]
  lines = [f"# Hostile files: {len(rows)} decoded by the {_DECODER.value} decoder", "",
           "`python tools/fuzz_decoder.py " +
           " ".join(f"--{k}={v}" for k, v in settings.items() if v is not None) + "`", "",
           f"**Failures (wrong image, slow, memory, crash, exception): {failures}.**", "",
           "| kind | cases | " + " | ".join(names) + " |",
           "|---|---|" + "---|" * len(names)]
  for kind in sorted(by_kind):
    counts = by_kind[kind]
    lines.append(f"| {kind} | {sum(counts.values())} | " +
                 " | ".join(str(counts[n]) for n in names) + " |")
  lines.append(f"| all | {len(rows)} | " + " | ".join(str(outcomes[n]) for n in names) + " |")
  seconds = sorted(r["seconds"] for r in rows)
  lines += ["", f"Decode seconds per case: median {seconds[len(seconds) // 2]:.3f}, "
            f"99th percentile {seconds[int(len(seconds) * 0.99)]:.3f}, max {seconds[-1]:.3f}.",
            "", "Clean files (the seeds; time and memory model of a declared size):", "",
            "| size | quality | bytes | decode s | peak above resting MiB | mutated |",
            "|---|---|---|---|---|---|"]
  lines += [f"| {s['width']}x{s['height']} | {s['quality']} | {s['bytes']} | "
            f"{s['seconds']:.3f} | {s['peak_bytes'] / 2**20:.1f} | {s['mutated']} |"
            for s in seed_info]
  lines += ["", "Most frequent error messages:", ""]
  lines += [f"- {count} x `{message}`" for message, count in messages.most_common(25)]
  with open(os.path.join(_OUT.value, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
