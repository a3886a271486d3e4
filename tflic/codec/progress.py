"""Progress of long coding work on a terminal: a bar, and nothing when not a terminal.

The codec reports its stages and steps through a callback `(stage, done, total)`
(`tflic.codec.Codec.compress` / `decompress`: "analysis" and "synthesis" count tiles,
"coding" the entropy coding). `Bar` turns those calls into a tqdm bar on stderr that
appears only once the work has taken `delay` seconds (short images show nothing) and
only if stderr is a terminal (a log file gets no carriage-return noise). With several
files, `Bar(files=...)` shows the current file's stage beside the bar over the files.
"""

import sys
import time

import tqdm

STAGES = ("analysis", "coding", "synthesis")
DEFAULT_DELAY = 2.0


class Bar:
  """A progress callback that draws on a terminal.

  Args:
    label: what the bar is about (e.g. the input file).
    files: a tqdm bar over several files: the stage goes beside it (no bar of its own).
    delay: seconds before the bar first appears.
    file: where to draw (default stderr); nothing unless it is a terminal.
  """

  def __init__(self, label, files=None, delay=DEFAULT_DELAY, file=None):
    self._label = label
    self._files = files
    self._delay = delay
    self._file = file if file is not None else sys.stderr
    self._bar = None
    self._start = None

  def __call__(self, stage, done, total):
    if self._files is not None:
      if not self._files.disable:
        self._files.set_postfix_str(f"{self._label}: {stage} {done}/{total}")
      return
    if self._bar is None:
      self._start = time.monotonic()
      self._bar = tqdm.tqdm(total=total, desc=f"{self._label}: {stage}", delay=self._delay,
                            bar_format="{desc} {n}/{total} |{bar}| {elapsed}",
                            file=self._file, leave=False,
                            disable=not _is_terminal(self._file))
    bar = self._bar
    if bar.disable:
      return
    bar.set_description_str(f"{self._label}: {stage}", refresh=False)
    bar.total, bar.n = total, done
    # Drawn once the work has taken `delay` (tqdm's own delay counts from the start too,
    # but would not redraw a new stage with nothing counted yet).
    if time.monotonic() - self._start >= self._delay:
      bar.refresh()

  def close(self):
    """Removes the bar (if it appeared), so that the result line follows cleanly."""
    if self._bar is not None:
      self._bar.close()
      self._bar = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def _is_terminal(file):
  try:
    return file.isatty()
  except (AttributeError, ValueError):  # no isatty, or closed
    return False
