"""Progress of long work (tflic.codec.progress): a bar on a terminal only, after a delay."""

import io
import pathlib

import numpy as np
from PIL import Image
import pytest
import tqdm

from tflic.codec import progress
from tflic import codec_cli  # pylint: disable=unused-import  (defines the flags)
from tflic.codec import image_io
from tflic.lite import decoder
from tflic.lite import encoder

LITE = pathlib.Path(__file__).resolve().parents[1] / "tflic" / "bundled" / "lite"


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


@pytest.fixture(scope="module")
def lite_coders():
  """The bundled model's fast path: no model to build."""
  return encoder.Encoder(str(LITE), num_threads=1), decoder.Decoder(str(LITE), num_threads=1)


def _stages(calls):
  """[(stage, [done, ...], total)] of a callback's calls, one entry per run of a stage."""
  runs = []
  for stage, done, total in calls:
    if not runs or runs[-1][0] != stage:
      runs.append((stage, [], total))
    assert total == runs[-1][2], calls
    runs[-1][1].append(done)
  return runs


def test_the_fast_path_reports_the_coding_loop_and_codes_the_same(lite_coders, kodak_dir):
  encode, decode = lite_coders
  image = image_io.read_image(kodak_dir / "kodim23.png")[:96, :160]
  chunks = 6 * 10 * encode.core.num_groups  # the 6 x 10 latent's positions x groups
  calls = []
  data = encode.compress(image, 0.5, progress=lambda *call: calls.append(call))
  assert data == encode.compress(image, 0.5)
  [analysis, coding] = _stages(calls)
  assert analysis == ("analysis", [0, 1], 1)
  assert coding[0] == "coding" and coding[2] == chunks
  assert coding[1][0] == 0 and coding[1][-1] == chunks and len(coding[1]) > 3
  assert all(a < b for a, b in zip(coding[1], coding[1][1:]))

  calls = []
  decoded = decode.decompress(data, progress=lambda *call: calls.append(call))
  np.testing.assert_array_equal(decoded, decode.decompress(data))
  [coding_again, synthesis] = _stages(calls)
  assert coding_again == coding and synthesis == ("synthesis", [0, 1], 1)

  terminal = _Terminal()  # the bar of those calls on a terminal, and on a log: nothing
  with progress.Bar("x.tflic", delay=0, file=terminal) as bar:
    decode.decompress(data, progress=bar)
  assert f"x.tflic: coding {chunks}/{chunks}" in terminal.getvalue()
  log = io.StringIO()
  with progress.Bar("x.tflic", delay=0, file=log) as bar:
    decode.decompress(data, progress=bar)
  assert log.getvalue() == ""
