"""Robustness of the command line against kills, interrupts and unwritable outputs.

No temporary file stays for good after a kill, an unwritable or taken output is refused
before any coding work, Ctrl-C and SIGTERM stop a run at once even inside one long
TensorFlow call (one line, status 130 or 143, no partial output), and what a killed
checkpoint write leaves is removed when training starts.

Only one test starts a process that imports TensorFlow; the others use no model, or a
stand-in whose work is one long call into C that holds no GIL (as TensorFlow's do).
"""

import os
import pathlib
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types

from absl import flags
from absl.testing import flagsaver
import numpy as np
from PIL import Image
import pytest

from tflic.codec import bitstream
from tflic.codec import image_io
from tflic import codec_cli
from tflic import errors

REPO = pathlib.Path(__file__).resolve().parents[1]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
STOP_SECONDS = 5  # a stopped run must end within this (it takes ~0.1 s)


def _temps(directory):
  return sorted(n for n in os.listdir(directory) if n.endswith(".tmp"))


def _dead_pid():
  child = subprocess.Popen([sys.executable, "-c", "pass"])
  child.wait()  # reaped: no process has this id (until the kernel hands it out again)
  return child.pid


# Stale temporary files.


def test_stale_temp_of_a_dead_writer_is_removed_by_the_next_write(tmp_path):
  sleeper = subprocess.Popen(["sleep", "60"])
  try:
    dead = tmp_path / f".out.bin.{_dead_pid()}.0123abcd.tmp"
    alive = tmp_path / f".out.bin.{sleeper.pid}.0123abcd.tmp"
    ours = tmp_path / f".out.bin.{os.getpid()}.89abcdef.tmp"  # another thread's, say
    other_output = tmp_path / f".other.bin.{_dead_pid()}.0123abcd.tmp"
    not_a_temp = tmp_path / ".out.bin.12.backup"
    for path in (dead, alive, ours, other_output, not_a_temp):
      path.write_bytes(b"complete, but never renamed")
    image_io.atomic_write(tmp_path / "out.bin", b"new")
    assert (tmp_path / "out.bin").read_bytes() == b"new"
    assert not dead.exists()
    assert alive.exists() and ours.exists() and other_output.exists()
    assert not_a_temp.exists()
  finally:
    sleeper.kill()
    sleeper.wait()
  # Its writer gone, the next write of the same output removes it.
  image_io.atomic_write(tmp_path / "out.bin", b"newer", overwrite=True)
  assert not alive.exists() and ours.exists()
  assert (tmp_path / "out.bin").read_bytes() == b"newer"


def test_temp_names_fit_in_a_file_name(tmp_path):
  path = tmp_path / ("x" * 250)  # within the 255-byte limit, and so must its temp be
  image_io.atomic_write(path, b"data")
  assert path.read_bytes() == b"data"
  assert os.listdir(tmp_path) == [path.name]


# A writer that stops with its temporary file written but not renamed: a slow disk.
_STUCK_WRITER = textwrap.dedent("""
    import os, sys, time
    from tflic.codec import image_io

    def stuck(fd):
      print("writing", flush=True)
      time.sleep(60)

    os.fsync = stuck
    with image_io.interruptible("writer"):
      image_io.atomic_write(sys.argv[1], b"new", overwrite=True)
""")


def _start_stuck_writer(path):
  """A process stuck in atomic_write(path), its temporary file written; and its pid."""
  proc = subprocess.Popen([sys.executable, "-c", _STUCK_WRITER, str(path)], env=ENV,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  assert proc.stdout.readline() == "writing\n", proc.communicate()
  return proc


def test_kill_9_during_a_write_leaves_the_old_output_and_the_next_write_cleans_up(
    tmp_path):
  out = tmp_path / "out.bin"
  out.write_bytes(b"old")
  proc = _start_stuck_writer(out)
  proc.kill()
  proc.wait()
  assert out.read_bytes() == b"old"  # nothing visible changed
  [temp] = _temps(tmp_path)
  assert temp.startswith(f".out.bin.{proc.pid}.")
  image_io.atomic_write(out, b"newer", overwrite=True)
  assert os.listdir(tmp_path) == ["out.bin"]
  assert out.read_bytes() == b"newer"


@pytest.mark.parametrize("signum, status, word", [
    (signal.SIGINT, 130, "interrupted"),
    (signal.SIGTERM, 143, "terminated"),
])
def test_signal_during_a_write_removes_its_temp_file(tmp_path, signum, status, word):
  out = tmp_path / "out.bin"
  out.write_bytes(b"old")
  proc = _start_stuck_writer(out)
  assert len(_temps(tmp_path)) == 1
  proc.send_signal(signum)
  _, err = proc.communicate(timeout=STOP_SECONDS)
  assert proc.returncode == status
  assert err == f"writer: {word}\n"
  assert os.listdir(tmp_path) == ["out.bin"] and out.read_bytes() == b"old"


def test_interruptible_restores_the_signal_handlers(tmp_path):
  handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  threads = threading.active_count()
  with image_io.interruptible("x"):
    assert signal.getsignal(signal.SIGINT) is not handlers[signal.SIGINT]
    image_io.atomic_write(tmp_path / "a", b"a")
  with pytest.raises(ValueError, match="raised inside"):
    with image_io.interruptible("x"):
      raise ValueError("raised inside")
  assert {s: signal.getsignal(s) for s in handlers} == handlers
  previous_wakeup_fd = signal.set_wakeup_fd(-1)
  signal.set_wakeup_fd(previous_wakeup_fd)
  assert previous_wakeup_fd == -1
  assert threading.active_count() == threads  # the watcher thread has ended


# Outputs that cannot be written are refused before any work.


@pytest.fixture
def unwritable_dir(tmp_path):
  """A directory in which no file can be created (for root too: chattr +i)."""
  path = tmp_path / "unwritable"
  path.mkdir()
  if os.geteuid() == 0:
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True,
                      check=False).returncode:
      pytest.skip("running as root, and chattr +i is not available here")
    try:
      yield path
    finally:
      subprocess.run(["chattr", "-i", str(path)], check=True)
  else:
    path.chmod(0o500)
    try:
      yield path
    finally:
      path.chmod(0o700)


class _Model:
  """Stands in for a loaded codec: records the work asked of it."""

  def __init__(self):
    self.calls = []

  def compress(self, image, quality, refine_steps=0, progress=None):
    del quality, refine_steps
    self.calls.append("compress")
    return bitstream.pack("wavefront", bytes(8), image.shape[0], image.shape[1], 0,
                          b"z", b"y", 0)

  def decompress(self, data, progress=None):
    header, _, _ = bitstream.unpack(data)
    self.calls.append("decompress")
    return np.zeros((header.height, header.width, 3), np.uint8)


@pytest.fixture
def run_codec_cli(monkeypatch, capsys):
  """Runs codec_cli's compress_main / decompress_main in this process, without TensorFlow
  or a model (a stand-in for the SavedModel path's): (exit status, stdout, stderr, the
  model's calls)."""
  model = _Model()
  monkeypatch.setattr(codec_cli, "_load_model", lambda path: model)
  monkeypatch.setattr(codec_cli, "_codec_module", lambda: types.SimpleNamespace(MIN_SIDE=1))

  def run(command, *args):
    program = f"tflic {command}"
    main = {"compress": codec_cli.compress_main, "decompress": codec_cli.decompress_main}
    with flagsaver.flagsaver():
      flags.FLAGS([program, "--runtime=tf"])
      status = main[command]([program, *map(str, args)])
    out, err = capsys.readouterr()
    calls = list(model.calls)
    model.calls.clear()
    return status, out, err, calls

  return run


def _error_lines(program, err):
  assert "Traceback" not in err
  return [line for line in err.splitlines() if line.startswith(f"{program}: error: ")]


def test_unwritable_output_directory_is_refused_before_any_work(tmp_path, unwritable_dir,
                                                                run_codec_cli):
  for name in ("a", "b"):
    Image.fromarray(np.full((20, 30, 3), 99, np.uint8)).save(tmp_path / f"{name}.png")
  status, out, err, calls = run_codec_cli("compress", tmp_path / "a.png",
                                          tmp_path / "b.png", unwritable_dir)
  assert status == 2 and not out and not calls
  lines = _error_lines("tflic compress", err)
  assert len(lines) == 2, err  # one per job, each checked before its work
  for line, name in zip(lines, ("a", "b")):
    assert f"cannot write {unwritable_dir / name}.tflic: " in line
    assert re.search("Permission denied|Operation not permitted", line), line
  assert not os.listdir(unwritable_dir)

  # The same run into a writable directory does call the model (the stand-in is live).
  written = tmp_path / "written"
  written.mkdir()
  status, out, err, calls = run_codec_cli("compress", tmp_path / "a.png",
                                          tmp_path / "b.png", written)
  assert status == 0 and calls == ["compress", "compress"], err
  assert sorted(os.listdir(written)) == ["a.tflic", "b.tflic"]

  status, out, err, calls = run_codec_cli("decompress", written / "a.tflic",
                                          unwritable_dir / "a.png")
  assert status == 2 and not calls and not out
  [line] = _error_lines("tflic decompress", err)
  assert f"cannot write {unwritable_dir / 'a.png'}: " in line


def test_each_job_checks_its_own_output_before_its_work(tmp_path, run_codec_cli):
  for name in ("a", "b"):
    Image.fromarray(np.full((20, 30, 3), 99, np.uint8)).save(tmp_path / f"{name}.png")
  out_dir = tmp_path / "out"
  out_dir.mkdir()
  (out_dir / "a.tflic").write_bytes(b"taken")
  status, out, err, calls = run_codec_cli("compress", tmp_path / "a.png",
                                          tmp_path / "b.png", out_dir)
  assert status == 2 and calls == ["compress"]  # b's only
  [line] = _error_lines("tflic compress", err)
  assert "a.tflic exists; pass --overwrite" in line
  assert out.count(" -> ") == 1 and "b.tflic" in out
  assert (out_dir / "a.tflic").read_bytes() == b"taken"

  status, out, err, calls = run_codec_cli("compress", tmp_path / "a.png",
                                          tmp_path / "missing" / "a.tflic")
  assert status == 2 and not calls
  [line] = _error_lines("tflic compress", err)
  assert "does not exist" in line
  (tmp_path / "a_file").write_bytes(b"")
  status, out, err, calls = run_codec_cli("compress", tmp_path / "a.png",
                                          tmp_path / "a_file" / "a.tflic")
  assert status == 2 and not calls
  [line] = _error_lines("tflic compress", err)
  assert "a_file is not a directory" in line


# Ctrl-C and SIGTERM during the coding work.

# `tflic compress` as the console script runs it, with a model whose compress is one
# TensorFlow graph that runs for minutes: Python cannot raise KeyboardInterrupt in it.
# The first input is coded at once, the second spins.
_SPINNING_COMPRESS = textwrap.dedent("""
    import sys
    import tensorflow as tf
    from tflic import cli
    from tflic.codec import bitstream
    from tflic import codec_cli

    @tf.function
    def spin(n):
      return tf.while_loop(lambda i: i < n, lambda i: i + 1, [tf.constant(0, tf.int64)])

    spin(tf.constant(0, tf.int64))  # traced now, so that the call below is all graph

    class Model:
      def compress(self, image, quality, refine_steps=0, progress=None):
        if image[0, 0, 0] == 1:
          return bitstream.pack("wavefront", bytes(8), 20, 30, 0, b"z", b"y", 0)
        print("coding", file=sys.stderr, flush=True)
        spin(tf.constant(10**15, tf.int64))

    codec_cli._load_model = lambda path: Model()
    codec_cli._codec_module = lambda: type("codec", (), {"MIN_SIDE": 1})
    sys.exit(cli.main(["tflic", "compress", "--runtime=tf", *sys.argv[1:]]))
""")


def test_ctrl_c_stops_compress_inside_a_long_tensorflow_call(tmp_path):
  Image.fromarray(np.full((20, 30, 3), 1, np.uint8)).save(tmp_path / "quick.png")
  Image.fromarray(np.full((20, 30, 3), 2, np.uint8)).save(tmp_path / "slow.png")
  out = tmp_path / "out"
  out.mkdir()
  proc = subprocess.Popen(
      [sys.executable, "-c", _SPINNING_COMPRESS, str(tmp_path / "quick.png"),
       str(tmp_path / "slow.png"), str(out)],
      env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  lines = []
  try:
    for line in proc.stderr:  # TensorFlow's own lines come first
      lines.append(line)
      if line == "coding\n":
        break
    assert lines[-1:] == ["coding\n"], "".join(lines)
    time.sleep(0.5)  # well inside the graph
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=STOP_SECONDS)
    stopped = time.monotonic() - start
  finally:
    proc.kill()
    proc.wait()
  assert proc.returncode == 130, stderr
  assert stderr == "tflic compress: interrupted\n", stderr
  assert stopped < STOP_SECONDS
  # The first file's line was flushed before the exit; it is complete, the second absent.
  assert stdout.startswith(f"{tmp_path / 'quick.png'} -> {out / 'quick.tflic'}: 30x20, ")
  assert os.listdir(out) == ["quick.tflic"]
  bitstream.unpack((out / "quick.tflic").read_bytes())


# `tflic-lite decompress` with a decoder whose work is one long call into C that does not
# hold the GIL (as LiteRT's invoke): PBKDF2 with a billion rounds.
_SPINNING_LITE = textwrap.dedent("""
    import hashlib, sys
    from tflic.lite import cli, decoder

    class Decoder:
      def __init__(self, *args, **kwargs):
        pass

      def decompress(self, data, max_pixels=None, progress=None):
        print("decoding", file=sys.stderr, flush=True)
        hashlib.pbkdf2_hmac("sha256", b"p", b"s", 10**9)

    decoder.Decoder = Decoder
    sys.exit(cli.main(["decompress", "--model=unused", *sys.argv[1:]]))
""")


@pytest.mark.parametrize("signum, status, word", [
    (signal.SIGINT, 130, "interrupted"),
    (signal.SIGTERM, 143, "terminated"),
])
def test_signals_stop_tflic_lite_inside_a_long_call(tmp_path, signum, status, word):
  (tmp_path / "a.tflic").write_bytes(
      bitstream.pack("wavefront", bytes(8), 20, 30, 0, b"z", b"y", 0))
  proc = subprocess.Popen(
      [sys.executable, "-c", _SPINNING_LITE, str(tmp_path / "a.tflic"),
       str(tmp_path / "a.png")],
      env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    assert proc.stderr.readline() == "decoding\n"
    time.sleep(0.2)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=STOP_SECONDS)
  finally:
    proc.kill()
    proc.wait()
  assert proc.returncode == status
  assert (stdout, stderr) == ("", f"tflic-lite decompress: {word}\n")
  assert os.listdir(tmp_path) == ["a.tflic"]


# Training.


def test_stale_checkpoint_temps_are_removed_when_training_starts(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tflic import config  # pylint: disable=g-import-not-at-top
  from tflic.model import checkpoint  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "workdir"
  directory = workdir / checkpoint.CHECKPOINT_SUBDIR
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable(3.0)),
                                       str(directory), max_to_keep=2)
  manager.save(checkpoint_number=2)
  # What kill -9 during the next save leaves: a temp directory, with or without its
  # parts (seen with TF 2.14: `part-...data-00000-of-00001.tempstate<digits>`).
  (directory / "ckpt-4_temp").mkdir()
  (directory / "ckpt-4_temp" / "part-00000-of-00001.data-00000-of-00001.tempstate1"
   ).write_bytes(b"partial")
  (directory / "ckpt-5_temp").mkdir()
  (directory / f"checkpoint.tmp{'0f' * 16}").write_text("partial state")
  # Not checkpoint temps: kept.
  kept = ["ckpt-2_temperature", "notes_temp", "ckpt-2.tables.npz", "checkpoint.tmp"]
  for name in kept:
    (directory / name).write_bytes(b"")
  before = sorted(os.listdir(directory))

  checkpoint.save_config(str(workdir), config.load("tiny"))  # what the chief does first

  after = sorted(os.listdir(directory))
  assert sorted(set(before) - set(after)) == [f"checkpoint.tmp{'0f' * 16}", "ckpt-4_temp",
                                              "ckpt-5_temp"]
  assert set(kept) <= set(after)
  assert tf.train.latest_checkpoint(str(directory)).endswith("ckpt-2")
  assert checkpoint.remove_stale_temps(str(workdir)) == []
  assert checkpoint.remove_stale_temps(str(tmp_path / "new_workdir")) == []


# One line for what the file system refuses.


def test_output_that_is_not_a_regular_file_is_refused(tmp_path):
  os.mkfifo(tmp_path / "fifo")
  with pytest.raises(errors.TflicError, match="not a regular file"):
    image_io.check_output(tmp_path / "fifo", overwrite=True)
  with pytest.raises(errors.TflicError, match="exists; pass --overwrite"):
    image_io.check_output(tmp_path / "fifo")
  assert os.listdir(tmp_path) == ["fifo"]


def test_existing_file_as_output_directory_is_one_line(tmp_path):
  (tmp_path / "a_file").write_bytes(b"")
  with pytest.raises(errors.TflicError, match="a_file is not a directory"):
    image_io.plan_outputs(["x.png", "y.png", str(tmp_path / "a_file")], "usage", ".tflic")


def test_result_lines_show_undecodable_file_names(tmp_path, run_codec_cli):
  Image.fromarray(np.full((20, 30, 3), 99, np.uint8)).save(tmp_path / "a.png")
  out = os.fsdecode(bytes(tmp_path) + b"/\xff.tflic")  # not UTF-8: a surrogate escape
  status, stdout, err, _ = run_codec_cli("compress", tmp_path / "a.png", out)
  assert status == 0, err
  assert "\\xff.tflic: 30x20" in stdout  # as printed to a strict UTF-8 stdout
  stdout.encode("utf-8")


# `tflic compress` with a stand-in model, without TensorFlow.
_FAKE_COMPRESS = textwrap.dedent("""
    import sys, types
    from absl import app, flags
    from tflic import cli
    from tflic.codec import bitstream
    from tflic import codec_cli

    class Model:
      def compress(self, image, quality, refine_steps=0, progress=None):
        return bitstream.pack("wavefront", bytes(8), 20, 30, 0, b"z", b"y", 0)

    codec_cli._load_model = lambda path: Model()
    codec_cli._codec_module = lambda: types.SimpleNamespace(MIN_SIDE=1)
    argv = ["tflic compress", "--runtime=tf", *sys.argv[1:]]
    flags.FLAGS(argv)
    app.run(cli.guarded(codec_cli.compress_main, "compress"), argv=argv)
""")


def test_a_closed_stdout_ends_the_run_quietly(tmp_path):
  for name in ("a", "b"):
    Image.fromarray(np.full((20, 30, 3), 99, np.uint8)).save(tmp_path / f"{name}.png")
  out = tmp_path / "out"
  out.mkdir()
  # `tflic compress ... | head -0`: the reader is gone before the first line.
  proc = subprocess.Popen([sys.executable, "-c", _FAKE_COMPRESS, str(tmp_path / "a.png"),
                           str(tmp_path / "b.png"), str(out)],
                          env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  proc.stdout.close()
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == 141, err  # as `cat` ends when its reader goes away
  assert not err
