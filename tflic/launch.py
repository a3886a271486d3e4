r"""Runs the workers of a multi-worker training on this machine, on loopback.

  python -m tflic.launch --workers=2 -- --config=tiny --workdir=/tmp/mw --steps=30

Starts N `python -m tflic.train --strategy=multi_worker` processes with the flags after
`--`, each with its TF_CONFIG (free 127.0.0.1 ports; worker 0 is the chief, which writes
the checkpoints and summaries), and prints their output with each line prefixed by
`[worker I] `. A watchdog stops all of them and exits non-zero with one line naming the
worker and why, when:
  - a worker has not joined the cluster --join_timeout seconds after the start (the
    strategy's constructor waits for ever for a peer that never starts);
  - a worker exits with an error or is killed;
  - a worker still runs --join_timeout seconds after another one finished.
Ctrl-C or SIGTERM to the launcher stops the workers: they finish their step, save a
checkpoint and exit. Stopping is SIGTERM, then SIGKILL after --grace seconds (a worker
that is still joining ignores SIGTERM); a second Ctrl-C kills them at once. The workers
run in their own process groups and die with the launcher, even on kill -9 (Linux:
PR_SET_PDEATHSIG), so none is left behind.
Exit status: 0 when every worker finished, 1 when one failed, 2 for bad arguments,
128+N after signal N.
"""

import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from absl import app
from absl import flags

_WORKERS = flags.DEFINE_integer("workers", 2, "Number of worker processes.", lower_bound=1)
_JOIN_TIMEOUT = flags.DEFINE_float(
    "join_timeout", 300, "Seconds the workers have to join the cluster (and to finish "
    "after one of them did) before all are stopped.", lower_bound=0)
_GRACE = flags.DEFINE_float(
    "grace", 30, "Seconds between SIGTERM and SIGKILL when stopping the workers (they "
    "finish their step and save a checkpoint in between).", lower_bound=0)

PROGRAM = "tflic launch"
# What `python -m tflic.train` prints before and after making its MultiWorkerMirroredStrategy
# (after "worker I: "): the constructor returns once every worker of TF_CONFIG has started.
JOINING = "joining the cluster"
JOINED = "joined the cluster"
HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1
# TensorFlow's C++ log lines ("2024-01-01 12:00:00.000: I ...", "I0101 12:00:00.0 ..."):
# not what a failure message should quote.
_LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d|[IWEF]\d{4} \d\d:\d\d|INFO:|WARNING:")


def free_ports(count):
  """`count` distinct free TCP ports on the loopback address."""
  sockets = []
  try:
    for _ in range(count):
      s = socket.socket()
      s.bind((HOST, 0))
      sockets.append(s)
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def tf_configs(ports):
  """Each worker's TF_CONFIG (JSON) for a cluster of workers on these loopback ports."""
  cluster = {"worker": [f"{HOST}:{port}" for port in ports]}
  return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
          for index in range(len(ports))]


def _die_with_this_process():
  """A preexec_fn: the child gets SIGKILL when this process dies (Linux), however it dies."""
  try:
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
  except (OSError, AttributeError):
    return None  # not Linux: the process groups still let the launcher stop them
  parent = os.getpid()

  def preexec():
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the launcher died before prctl
      os._exit(1)  # pylint: disable=protected-access

  return preexec


def _describe_exit(status):
  if status < 0:
    return f"was killed by {signal.Signals(-status).name}"
  return f"exited with status {status}"


class Worker:
  """One `python -m tflic.train` process and what its output said."""

  def __init__(self, index, train_args, tf_config):
    self.index = index
    self.state = "starting"  # then "joining" (in the strategy's constructor), "joined"
    self.last_error = ""  # its last stderr line that is not a TensorFlow log line
    env = dict(os.environ, TF_CONFIG=tf_config, PYTHONUNBUFFERED="1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    self.process = subprocess.Popen(
        [sys.executable, "-m", "tflic.train", *train_args, "--strategy=multi_worker"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, preexec_fn=_die_with_this_process())
    self._threads = []

  def start_output(self, lock):
    """Copies its output, prefixed, to ours (one thread per stream)."""
    for stream, out in ((self.process.stdout, sys.stdout), (self.process.stderr, sys.stderr)):
      thread = threading.Thread(target=self._copy, args=(stream, out, lock), daemon=True)
      thread.start()
      self._threads.append(thread)

  def _copy(self, stream, out, lock):
    prefix = f"[worker {self.index}] "
    own = f"worker {self.index}: "
    for raw in iter(stream.readline, b""):
      line = raw.decode("utf-8", "replace").rstrip("\r\n")
      if out is sys.stdout and line.startswith(own):
        if line[len(own):].startswith(JOINED):
          self.state = "joined"
        elif line[len(own):].startswith(JOINING) and self.state == "starting":
          self.state = "joining"
      if out is sys.stderr and line.strip() and not _LOG_LINE.match(line):
        self.last_error = line.strip()
      with lock:
        try:
          out.write(prefix + line + "\n")
          out.flush()
        except (OSError, ValueError):  # our own output is gone: keep draining theirs
          pass
    stream.close()

  def finish_output(self, timeout=5.0):
    for thread in self._threads:
      thread.join(timeout)

  def running(self):
    return self.process.poll() is None

  def signal(self, signum):
    """Sends a signal to its process group (it and anything it started)."""
    try:
      os.killpg(self.process.pid, signum)
    except (ProcessLookupError, PermissionError):
      pass


class _Signals:
  """The signals the launcher received (Ctrl-C, SIGTERM, SIGHUP)."""

  def __init__(self):
    self.received = []
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
      signal.signal(signum, self._handle)

  def _handle(self, signum, frame):
    del frame
    self.received.append(signal.Signals(signum))


def _names(indices):
  return f"worker{'s' if len(indices) > 1 else ''} {', '.join(map(str, indices))}"


def watch(workers, join_timeout, signals, poll=0.1):
  """Waits until all workers finished or one failed; returns (exit status, message)."""
  start = time.monotonic()
  first_done = None
  while True:
    if signals.received:
      received = signals.received[0]
      return 128 + received, f"interrupted ({received.name})"
    failed = [w for w in workers if w.process.poll()]
    if failed:
      # Seen in the same poll, a worker killed by a signal is the cause more likely than
      # one that failed with an error (e.g. because a peer was gone).
      worker = min(failed, key=lambda w: (w.process.returncode > 0, w.index))
      status = worker.process.returncode
      why = _describe_exit(status)
      if status > 0 and worker.last_error:
        why += f" ({worker.last_error[:300]})"
      return 1, f"worker {worker.index} {why}"
    done = [w for w in workers if w.process.returncode == 0]
    if len(done) == len(workers):
      return 0, None
    now = time.monotonic()
    if done and first_done is None:
      first_done = now
    waiting = [w for w in workers if w.state != "joined" and w.running()]
    if not done and waiting and now - start > join_timeout:
      # A worker that never reached the strategy's constructor is the one missing; if
      # all are in it, none can be blamed alone.
      late = [w.index for w in waiting if w.state == "starting"] or [w.index for w in waiting]
      return 1, f"{_names(late)} did not join the cluster within {join_timeout:g} s"
    if first_done is not None and now - first_done > join_timeout:
      late = [w.index for w in workers if w.running()]
      return 1, (f"{_names(late)} still running {join_timeout:g} s after worker "
                 f"{done[0].index} finished")
    time.sleep(poll)


def stop(workers, grace, signals):
  """SIGTERM to the running workers, SIGKILL to those still running after `grace` seconds
  (or at once on another signal to the launcher). Returns the indices of those killed."""
  running = [w for w in workers if w.running()]
  for worker in running:
    worker.signal(signal.SIGTERM)
  signals_before = len(signals.received)
  deadline = time.monotonic() + grace
  while (any(w.running() for w in running) and time.monotonic() < deadline and
         len(signals.received) == signals_before):
    time.sleep(0.05)
  killed = [w.index for w in running if w.running()]
  for worker in running:
    if worker.running():
      worker.signal(signal.SIGKILL)
  for worker in workers:
    worker.process.wait()
  return killed


def launch(train_args, num_workers, join_timeout, grace):
  """Runs the workers; returns (exit status, message for a failure or None)."""
  signals = _Signals()
  ports = free_ports(num_workers)
  lock = threading.Lock()
  # All are started before any output thread (fork with threads running is not safe).
  workers = []
  try:
    for index, tf_config in enumerate(tf_configs(ports)):
      workers.append(Worker(index, train_args, tf_config))
  except BaseException:
    stop(workers, 0, signals)
    raise
  print(f"{PROGRAM}: {num_workers} worker(s) on {HOST} ports "
        f"{', '.join(map(str, ports))} (pids {', '.join(str(w.process.pid) for w in workers)})",
        flush=True)
  for worker in workers:
    worker.start_output(lock)
  stopped = killed = []
  try:
    status, message = watch(workers, join_timeout, signals)
  finally:
    stopped = [w.index for w in workers if w.running()]
    if stopped:
      killed = stop(workers, grace, signals)
    for worker in workers:
      worker.finish_output()
  if message and stopped:
    message += f"; stopped {_names(stopped)}"
    if killed:
      message += f" (SIGKILL after {grace:g} s: {_names(killed)})"
  return status, message


def main(argv):
  train_args = argv[1:]
  for arg in train_args:
    problem = None
    if re.match(r"--(no)?strategy(=|$)", arg) and arg != "--strategy=multi_worker":
      problem = f"{arg}: the workers train with --strategy=multi_worker"
    elif not arg.startswith("-"):
      problem = f"unexpected argument {arg!r} (the training flags go after --)"
    if problem:
      print(f"{PROGRAM}: error: {problem}", file=sys.stderr)
      return 2
  status, message = launch(train_args, _WORKERS.value, _JOIN_TIMEOUT.value, _GRACE.value)
  if message:
    kind = "error: " if status == 1 else ""
    print(f"{PROGRAM}: {kind}{message}", file=sys.stderr, flush=True)
  return status


if __name__ == "__main__":
  app.run(main)
