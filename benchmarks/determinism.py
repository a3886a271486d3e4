r"""Decodes real files across thread counts and without TensorFlow; the RD and time cost.

  python benchmarks/determinism.py --out=reports/determinism_kodak

A benchmark, not a test: it takes about 20 minutes on 2 CPU cores. For every Kodak image x
quality, plus crops of kodim01 of sizes 1x1, 17x300, 300x17 and 97x131:
- one process per thread count (TensorFlow intra- and inter-op threads 1, 2, 4) encodes
  every file; the files are compared byte for byte across the encoders;
- one process per thread count decodes the first encoder's files (the same bytes as every
  encoder's, when they match) and records whether each decoded, the image's hash, PSNR
  and the decode seconds;
- the numpy implementation (`tflic.codec.deterministic.reference`, no TensorFlow) recomputes
  every chunk's mean from the decoded latent and checks the file's latent check;
- the RD cost against --v1_results (the float entropy model's Kodak results, or the
  bundled model's own report, which the files must then match): BD-rate
  and BD-PSNR of the mean curves, and decode seconds against theirs.
Writes results.json and report.md to --out. Run it with nothing else on the CPU: its
seconds are measurements.
"""

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np

_MODEL = flags.DEFINE_string("model", None, "SavedModel (default: the bundled model).")
_IMAGES = flags.DEFINE_string("images", "../shared/data/kodak", "Kodak folder.")
_QUALITIES = flags.DEFINE_list("qualities", ["0", "0.25", "0.5", "0.75", "1"], "Qualities.")
_THREADS = flags.DEFINE_list("threads", ["1", "2", "4"], "TensorFlow thread counts.")
_OUT = flags.DEFINE_string("out", "reports/determinism_kodak", "Output folder.")
_V1 = flags.DEFINE_string(
    "v1_results", "reports/bundled_medium_hifi_kodak/results.json",
    "tflic eval results to set the files against: the float entropy model's (bitstream "
    "v1), for v2's cost, or the bundled model's own report, which the files must match.")
_ROLE = flags.DEFINE_enum("role", None, ["encode", "decode"], "Internal: a worker process.")
_FILES = flags.DEFINE_string("files", None, "Internal: the worker's file folder.")

ODD_SIZES = [(1, 1), (17, 300), (300, 17), (97, 131)]


def _items():
  """(name, image) of every test image: Kodak, then the odd-size crops of kodim01."""
  from tflic.codec import image_io  # pylint: disable=g-import-not-at-top
  paths = sorted(pathlib.Path(_IMAGES.value).glob("*.png"))
  items = [(p.stem, image_io.read_image(p)) for p in paths]
  first = items[0][1]
  items += [(f"{items[0][0]}_{h}x{w}", first[:h, :w]) for h, w in ODD_SIZES]
  return items


def _worker():
  """Encodes or decodes every (image, quality) in this process; writes a JSON of results."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tflic.codec import bitstream  # pylint: disable=g-import-not-at-top
  from tflic.codec.deterministic import reference  # pylint: disable=g-import-not-at-top
  from tflic.codec import tf_codec  # pylint: disable=g-import-not-at-top
  from tflic import errors  # pylint: disable=g-import-not-at-top
  model = _MODEL.value or tf_codec.default_model_path()
  the_codec = tf_codec.load(model)
  files = pathlib.Path(_FILES.value)
  numpy_model = reference.load(os.path.join(model, "assets", reference.FILENAME))
  items = _items()
  # Warm-up: the first call traces the tf.functions; no timed call should include it.
  warm_up = the_codec.compress(items[0][1][:64, :64], 0.5)
  the_codec.decompress(warm_up)
  results = {}
  for name, image in items:
    for quality in _QUALITIES.value:
      key = f"{name}@{quality}"
      path = files / f"{key}.tflic"
      start = time.perf_counter()
      if _ROLE.value == "encode":
        path.write_bytes(the_codec.compress(image, float(quality)))
        results[key] = {"encode_seconds": time.perf_counter() - start}
        continue
      data = path.read_bytes()
      try:
        decoded = the_codec.decompress(data)
      except errors.TflicError as e:
        results[key] = {"decoded": False, "error": str(e)}
        continue
      result = {"decoded": True, "decode_seconds": time.perf_counter() - start,
                "image_sha256": hashlib.sha256(decoded.tobytes()).hexdigest(),
                "bytes": len(data), "bpp": 8 * len(data) / (image.shape[0] * image.shape[1])}
      mse = np.mean((decoded.astype(np.float64) - image) ** 2)
      result["psnr"] = float(10 * np.log10(255**2 / mse)) if mse else float("inf")
      if _FILES.value.endswith("verify"):
        latent = the_codec.module.decode_latent(tf.constant(data))
        start = time.perf_counter()
        result["numpy_verified"] = numpy_model.verify(
            latent["z_symbols"].numpy(), latent["y_hat"].numpy(),
            bitstream.unpack(data)[0].latent_check)
        result["numpy_seconds"] = time.perf_counter() - start
      results[key] = result
  (files / f"{_ROLE.value}.json").write_text(json.dumps(results, indent=1))


def _run_worker(role, threads, files):
  env = dict(os.environ, TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS=threads,
             TF_CPP_MIN_LOG_LEVEL="2")
  args = [sys.executable, __file__, f"--role={role}", f"--files={files}",
          f"--images={_IMAGES.value}", f"--qualities={','.join(_QUALITIES.value)}"]
  if _MODEL.value:
    args.append(f"--model={_MODEL.value}")
  subprocess.run(args, env=env, check=True)
  return json.loads((pathlib.Path(files) / f"{role}.json").read_text())


def _digest(folder):
  return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(pathlib.Path(folder).glob("*.tflic"))}


def _mean_curve(per_key, qualities, names):
  rates = [np.mean([per_key[f"{n}@{q}"]["bpp"] for n in names]) for q in qualities]
  psnrs = [np.mean([per_key[f"{n}@{q}"]["psnr"] for n in names]) for q in qualities]
  return rates, psnrs


def main(argv):
  del argv
  if _ROLE.value:
    _worker()
    return
  from tflic.evaluation import bdrate  # pylint: disable=g-import-not-at-top
  out = pathlib.Path(_OUT.value)
  threads = _THREADS.value
  encoded, digests = {}, {}
  for t in threads:
    folder = out / "files" / f"encoder{t}"
    folder.mkdir(parents=True, exist_ok=True)
    encoded[t] = _run_worker("encode", t, folder)
    digests[t] = _digest(folder)
  first = out / "files" / f"encoder{threads[0]}"
  decoded = {}
  for i, t in enumerate(threads):
    folder = out / "files" / (f"decoder{t}" + ("-verify" if i == 0 else ""))
    folder.mkdir(parents=True, exist_ok=True)
    for p in first.glob("*.tflic"):
      (folder / p.name).write_bytes(p.read_bytes())
    decoded[t] = _run_worker("decode", t, folder)
  keys = sorted(decoded[threads[0]])
  identical_files = sum(all(digests[t][f"{k}.tflic"] == digests[threads[0]][f"{k}.tflic"]
                            for t in threads) for k in keys)
  reference_run = decoded[threads[0]]
  identical_images = sum(
      all(decoded[t][k].get("image_sha256") == reference_run[k].get("image_sha256") and
          decoded[t][k]["decoded"] for t in threads) for k in keys)
  verified = sum(bool(reference_run[k].get("numpy_verified")) for k in keys)
  kodak = sorted({k.split("@")[0] for k in keys if "x" not in k.split("@")[0].split("_")[-1]})
  qualities = _QUALITIES.value
  v2_rates, v2_psnrs = _mean_curve(reference_run, qualities, kodak)
  v1 = json.loads(pathlib.Path(_V1.value).read_text())["codecs"]["tflic"]["results"]
  v1_by_key = {f"{pathlib.Path(n).stem}@{q}": r for q, per in v1.items() for n, r in per.items()}
  v1_rates, v1_psnrs = _mean_curve(v1_by_key, [str(float(q)).rstrip("0").rstrip(".")
                                               for q in qualities], kodak)
  bd_rate = bdrate.bd_rate(v1_rates, v1_psnrs, v2_rates, v2_psnrs)
  bd_psnr = bdrate.bd_quality(v1_rates, v1_psnrs, v2_rates, v2_psnrs)
  decode_seconds = {t: float(np.mean([decoded[t][f"{n}@{q}"]["decode_seconds"]
                                      for n in kodak for q in qualities])) for t in threads}
  v1_decode = float(np.mean([v1_by_key[f"{n}@{q}"]["decode_seconds"] for n in kodak
                             for q in v1]))
  summary = {
      "files": len(keys), "byte_identical_across_encoders": identical_files,
      "decoded_identically_by_every_decoder": identical_images,
      "numpy_verified": verified,
      "bd_rate_vs_v1_percent": bd_rate.value, "bd_psnr_vs_v1_db": bd_psnr.value,
      "v2_curve": {"bpp": v2_rates, "psnr": v2_psnrs},
      "v1_curve": {"bpp": v1_rates, "psnr": v1_psnrs},
      "kodak_decode_seconds_by_threads": decode_seconds, "v1_kodak_decode_seconds": v1_decode,
      "numpy_seconds_per_kodak_file": float(np.mean(
          [reference_run[f"{n}@{q}"]["numpy_seconds"] for n in kodak for q in qualities])),
      "encode_seconds_by_threads": {t: float(np.mean([r["encode_seconds"]
                                                      for r in encoded[t].values()]))
                                    for t in threads},
  }
  (out / "results.json").write_text(json.dumps(
      {"summary": summary, "encoded": encoded, "decoded": decoded}, indent=1))
  lines = [
      "# Bitstream v2 determinism on Kodak", "",
      f"`python benchmarks/determinism.py --out={_OUT.value}`: {len(kodak)} Kodak images x "
      f"{len(qualities)} qualities + 4 odd sizes x {len(qualities)} = {len(keys)} files; "
      f"TensorFlow threads {', '.join(threads)} (intra- and inter-op) for encoder and decoder.",
      "", "| check | files |", "|---|---|",
      f"| byte-identical files from every encoder | {identical_files} / {len(keys)} |",
      f"| decoded, identical images, by every decoder | {identical_images} / {len(keys)} |",
      f"| numpy (no TF) recomputes every mean and the latent check | {verified} / {len(keys)} |",
      "", "| | bitstream v1 (float) | v2 (integer) |", "|---|---|---|",
  ]
  for q, r1, p1, r2, p2 in zip(qualities, v1_rates, v1_psnrs, v2_rates, v2_psnrs):
    lines.append(f"| quality {q} | {r1:.4f} bpp, {p1:.2f} dB | {r2:.4f} bpp, {p2:.2f} dB |")
  lines += [
      "", f"BD-rate of v2 against v1: {bd_rate.value:+.2f}% (BD-PSNR {bd_psnr.value:+.3f} dB).",
      "", "Mean seconds per Kodak decode (in the worker process, after its first file): " +
      ", ".join(f"{t} thread(s) {s:.2f} s" for t, s in decode_seconds.items()) +
      f"; v1's eval report says {v1_decode:.2f} s (measured when it was made, on the "
      "machine of that day: compare speeds measured side by side).",
      f"numpy verification of a Kodak latent: {summary['numpy_seconds_per_kodak_file']:.2f} s.",
  ]
  (out / "report.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
