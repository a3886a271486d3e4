"""Progress of long work (tflic.codec.progress): a bar on a terminal only, after a delay."""

import io

import numpy as np
from PIL import Image
import tqdm

from tflic.codec import progress
from tflic import codec_cli  # pylint: disable=unused-import  (defines the flags)


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def _run(bar):
  with bar:
    for done in range(4):
      bar("analysis", done, 3)
    bar("coding", 0, 1)
    bar("coding", 1, 1)


def test_a_terminal_gets_a_bar_of_the_stages_and_clears_it():
  terminal = _Terminal()
  _run(progress.Bar("a.png", delay=0, file=terminal))
  shown = terminal.getvalue()
  assert "a.png: analysis 3/3" in shown and "a.png: coding 1/1" in shown
  assert shown.endswith("\r")  # cleared: the result line follows on a clean line


def test_short_work_and_non_terminals_show_nothing():
  terminal, log = _Terminal(), io.StringIO()
  _run(progress.Bar("a.png", delay=60, file=terminal))
  _run(progress.Bar("a.png", delay=0, file=log))
  assert terminal.getvalue() == "" and log.getvalue() == ""


def test_with_several_files_the_stage_goes_beside_the_files_bar():
  terminal = _Terminal()
  files = tqdm.tqdm(total=2, file=terminal, desc="compress")
  bar = progress.Bar("b.png", files=files, delay=0, file=terminal)
  bar("synthesis", 2, 5)
  assert "b.png: synthesis 2/5" in files.postfix
  files.close()
  hidden = tqdm.tqdm(total=2, file=io.StringIO(), disable=True)
  progress.Bar("b.png", files=hidden)("analysis", 0, 1)  # no terminal: nothing to do


def test_cli_tiles_by_its_memory_flag_and_prints_no_bar_to_a_log(tiny_model_dir, tmp_path,
                                                                  run_main):
  rng = np.random.default_rng(0)
  names = []
  for i in range(2):
    names.append(tmp_path / f"p{i}.png")
    Image.fromarray(rng.integers(0, 256, [300, 280, 3], dtype=np.uint8)).save(names[-1])
  out = tmp_path / "out"
  out.mkdir()
  status, stdout, stderr = run_main("compress", f"--model={tiny_model_dir}",
                                    "--tile_memory_mib=16", *names, out)
  assert status == 0, stderr
  assert "\r" not in stderr and "analysis" not in stderr
  assert len(stdout.splitlines()) == 2
  status, stdout, stderr = run_main("decompress", f"--model={tiny_model_dir}",
                                    "--tile_memory_mib=16", out / "p0.tflic",
                                    tmp_path / "d0.png")
  assert status == 0 and "\r" not in stderr, stderr
  assert Image.open(tmp_path / "d0.png").size == (280, 300)
