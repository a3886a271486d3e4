"""Multi-worker training on loopback through `python -m tflic.launch`: the workers resume
the chief's checkpoint and train alike, a killed or missing worker stops all of them with
one line, and the launcher leaves no process behind (even killed with -9)."""

import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import tensorflow as tf

from tflic import config
from tflic.model import checkpoint
from tflic.training import trainer as trainer_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


class _Launch:
  """`python -m tflic.launch ARGS` running, its output lines collected as they come."""

  def __init__(self, *args, env=None):
    self.process = subprocess.Popen(
        [sys.executable, "-m", "tflic.launch", *args], cwd=REPO, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    self.stdout, self.stderr = [], []
    self._threads = [threading.Thread(target=self._read, args=(stream, lines), daemon=True)
                     for stream, lines in ((self.process.stdout, self.stdout),
                                           (self.process.stderr, self.stderr))]
    for thread in self._threads:
      thread.start()

  @staticmethod
  def _read(stream, lines):
    for line in stream:
      lines.append(line.rstrip("\n"))

  def wait_for(self, condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
      assert self.process.poll() is None, (
          f"the launcher exited ({self.process.returncode}) before {what}:\n" + self.output())
      assert time.monotonic() < deadline, f"no {what} after {timeout} s:\n" + self.output()
      time.sleep(0.1)

  def pids(self):
    """The workers' pids, from the launcher's first line."""
    self.wait_for(lambda: self.stdout, 60, "first line")
    return [int(p) for p in re.search(r"\(pids ([0-9, ]+)\)", self.stdout[0])[1].split(", ")]

  def says(self, text):
    return any(text in line for line in self.stdout)

  def wait(self, timeout):
    status = self.process.wait(timeout)
    for thread in self._threads:
      thread.join(10)
    return status

  def own_errors(self):
    """The launcher's own stderr lines (not its workers')."""
    return [line for line in self.stderr if not line.startswith("[worker ")]

  def output(self):
    return "\n".join(self.stdout[-40:] + self.stderr[-40:])

  def kill(self):
    if self.process.poll() is None:
      self.process.kill()  # its workers die with it (PR_SET_PDEATHSIG)
      self.process.wait()


def _live_processes_with(text):
  """Pids of the live (not zombie) processes whose command line contains `text`."""
  pids = []
  for name in os.listdir("/proc"):
    if not name.isdigit():
      continue
    try:
      command = pathlib.Path(f"/proc/{name}/cmdline").read_bytes()
      state = pathlib.Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
      continue
    if text.encode() in command and state != "Z":
      pids.append(int(name))
  return pids


def _assert_all_gone(text, timeout=10):
  deadline = time.monotonic() + timeout
  while _live_processes_with(text) and time.monotonic() < deadline:
    time.sleep(0.1)
  assert not _live_processes_with(text), "processes left behind"


def _train_flags(workdir, train_dir, *more):
  return ["--config=tiny", f"--workdir={workdir}", f"--dataset={train_dir}", "--batch_size=2",
          "--patch_size=64", "--progress=false", *more]


def _latest_step(workdir):
  latest = checkpoint.latest_checkpoint(str(workdir))
  return int(latest.rsplit("-", 1)[1]) if latest else None


def _seeded_workdir(workdir, step):
  """A training directory holding a resumable checkpoint of a fresh tiny model at `step`,
  written here by a Trainer without a strategy (no training step, so no trace); returns
  the model."""
  cfg = config.load("tiny")
  trainer = trainer_lib.Trainer(cfg, str(workdir), tf.distribute.get_strategy())
  trainer._build_optimizer()  # pylint: disable=protected-access  (as a train step does)
  trainer.step.assign(step)
  checkpoint.save_config(str(workdir), cfg)
  trainer.save()
  return trainer.model


def test_two_workers_resume_train_alike_and_finish_together(train_dir, tmp_path):
  """Two workers on 127.0.0.1 resume the chief's checkpoint (written without a strategy:
  checkpoints do not depend on it), train the tiny model and end together, with the same
  weights on both, those of the chief's last checkpoint, which also holds their moving
  average (--average_decay: started from the resumed weights, updated in each step).
  Only the chief wrote checkpoints and summaries; worker 1's temporary checkpoints are
  gone; no process is left."""
  workdir = tmp_path / "multi"
  seeded = _seeded_workdir(workdir, 4)
  scratch = tmp_path / "scratch"  # worker 1's TMPDIR (and the launcher's)
  scratch.mkdir()
  target = 7
  run = _Launch("--workers=2", "--", *_train_flags(workdir, train_dir, "--checkpoint_every=2",
                                                  "--average_decay=0.5"),
                f"--steps={target}", env=dict(os.environ, TMPDIR=str(scratch)))
  try:
    status = run.wait(600)
  finally:
    run.kill()
  assert status == 0, run.output()
  assert not run.own_errors(), run.output()
  for index in (0, 1):
    assert run.says(f"[worker {index}] resuming from step 4"), run.output()
  digests = {index: digest for index, digest, step in re.findall(
      r"^\[worker (\d)\] worker \1: weights digest (\w+) at step (\d+)$",
      "\n".join(run.stdout), re.M) if int(step) == target}
  assert set(digests) == {"0", "1"} and digests["0"] == digests["1"], run.output()
  assert _latest_step(workdir) == target
  _, model, step = checkpoint.restore_model(str(workdir))
  assert step == target and trainer_lib.weights_digest(model) == digests["0"]
  # A convex combination of the weights of steps 4-7, half of it step 7's: nearer to
  # them than step 4's were (a fresh model's weights would be far from both).
  average = checkpoint.restore_model(str(workdir), average=True)[1]
  distance = lambda a, b: np.sqrt(sum(np.sum((x.numpy() - y.numpy())**2) for x, y in zip(
      a.variables, b.variables) if x.dtype.is_floating))
  assert 0 < distance(average, model) < distance(seeded, model)
  # Only the chief wrote checkpoints and summaries (event files are named with the pid).
  events = list((workdir / "train").glob("events.out.tfevents.*"))
  assert events and all(path.name.split(".")[-3] == str(run.pids()[0]) for path in events)
  assert not list(workdir.glob("worker*"))
  # Worker 1's checkpoints are removed: nothing is left in its TMPDIR but the __pycache__
  # that Python leaves there under Bazel.
  left = [path.name for path in scratch.iterdir() if path.name != "__pycache__"]
  assert not left, left
  _assert_all_gone(str(workdir))


def test_a_killed_worker_stops_the_other_and_the_checkpoint_is_kept(train_dir, tmp_path):
  """kill -9 of worker 1 once both have resumed: the launcher stops worker 0 (SIGKILL
  after --grace if it does not stop in time) with one line, leaves no process, and the
  chief's checkpoint is as it was. (Killed before a training step, so that no step is
  traced: test_train.py's kill -9 test kills a run mid-training.)"""
  workdir = tmp_path / "killed"
  digest = trainer_lib.weights_digest(_seeded_workdir(workdir, 4))
  run = _Launch("--workers=2", "--grace=2", "--", *_train_flags(workdir, train_dir),
                "--steps=100000")
  try:
    pids = run.pids()
    run.wait_for(lambda: all(run.says(f"[worker {index}] resuming from step 4")
                             for index in (0, 1)), 300, "resume")
    os.kill(pids[1], signal.SIGKILL)
    killed = time.monotonic()
    status = run.wait(120)
    stopped_after = time.monotonic() - killed
  finally:
    run.kill()
  assert status == 1, run.output()
  [line] = run.own_errors()
  assert re.fullmatch(r"tflic launch: error: worker 1 was killed by SIGKILL; stopped worker 0"
                      r"( \(SIGKILL after 2 s: worker 0\))?", line), line
  assert stopped_after < 20, stopped_after
  _assert_all_gone(str(workdir))
  _, model, step = checkpoint.restore_model(str(workdir))
  assert step == 4 and trainer_lib.weights_digest(model) == digest


def test_a_worker_that_does_not_join_stops_them_all(train_dir, tmp_path):
  """A worker that never joins (here stopped with SIGSTOP) would leave the other waiting
  for ever in the strategy's constructor, which ignores SIGTERM: both get SIGKILL."""
  workdir = tmp_path / "never"
  run = _Launch("--workers=2", "--join_timeout=15", "--grace=2", "--",
                *_train_flags(workdir, train_dir))
  try:
    os.kill(run.pids()[1], signal.SIGSTOP)
    status = run.wait(120)
  finally:
    run.kill()
  assert status == 1, run.output()
  [line] = run.own_errors()
  assert re.fullmatch(r"tflic launch: error: workers? (0, )?1 did not join the cluster within "
                      r"15 s; stopped workers 0, 1 \(SIGKILL after 2 s: workers? (0, )?1\)",
                      line), line
  _assert_all_gone(str(workdir))


def test_sigterm_to_the_launcher_stops_the_workers(train_dir, tmp_path):
  # (Sent as the workers start: a worker in the strategy's constructor, which ignores
  # SIGTERM, is the test above's.)
  workdir = tmp_path / "interrupted"
  run = _Launch("--workers=2", "--grace=2", "--", *_train_flags(workdir, train_dir))
  try:
    run.pids()
    run.process.send_signal(signal.SIGTERM)
    status = run.wait(60)
  finally:
    run.kill()
  assert status == 128 + signal.SIGTERM, run.output()
  [line] = run.own_errors()
  assert line.startswith("tflic launch: interrupted (SIGTERM); stopped workers 0, 1"), line
  _assert_all_gone(str(workdir))


def test_workers_die_with_a_launcher_killed_with_sigkill(train_dir, tmp_path):
  workdir = tmp_path / "orphans"
  run = _Launch("--workers=2", "--", *_train_flags(workdir, train_dir))
  try:
    pids = run.pids()
    assert set(pids) <= set(_live_processes_with(str(workdir)))
  finally:
    run.kill()  # SIGKILL: no chance to stop its workers itself
  _assert_all_gone(str(workdir))


def test_launcher_refuses_another_strategy():
  result = subprocess.run([sys.executable, "-m", "tflic.launch", "--", "--strategy=mirrored"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
  assert result.returncode == 2
  assert result.stderr == ("tflic launch: error: --strategy=mirrored: the workers train "
                           "with --strategy=multi_worker\n")
