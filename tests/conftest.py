"""Shared test fixtures: paths to the shared data, the tiny models, and a quiet TensorFlow.

The tiny models' directories (training directories, SavedModel and LiteRT exports) are
made once per test run and shared by pytest-xdist's workers (`_built_once`); the codecs
made from them (tracing their graphs or loading a SavedModel costs tens of seconds) are
made once per worker process.
"""

import contextlib
import fcntl
import os
import pathlib
import shutil
import signal

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# A suite started in the background by a non-interactive shell (`pytest ... &`) inherits
# SIGINT ignored, as would every process its tests start (an ignored signal stays ignored
# across exec): the Ctrl-C tests need it delivered.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
  signal.signal(signal.SIGINT, signal.default_int_handler)

import pytest  # pylint: disable=g-import-not-at-top

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


# Seconds the tests that take one or more take (call and setup, `pytest -n 2` on a 2-core
# machine with nothing else of note running, 2026-12-05), by file and test name (each
# parametrized case costs this); any other test counts as _DEFAULT_COST. Used to order the
# tests (pytest_collection_modifyitems) and to pick the `fast` subset; re-measure with
# `--durations=0` when tests change.
_COSTS = {
    "test_train.py::test_grow_train_kill_9_then_resume_with_fine_tuning_flags": 41,
    "test_multi_worker.py::test_two_workers_resume_train_alike_and_finish_together": 39,
    "test_train.py::test_training_tiny_lowers_the_loss": 22,
    "test_range_coder_ops.py::"
    "test_an_editable_install_without_the_library_builds_it_on_first_load": 18,
    "test_codec.py::test_refined_files_decode_with_the_same_decoder": 18,
    "test_multi_worker.py::test_a_worker_that_does_not_join_stops_them_all": 17,
    "test_deterministic.py::"
    "test_bundled_model_is_identical_across_thread_counts_and_without_tensorflow": 15,
    "test_hostile_files.py::test_declared_size_is_bounded_by_the_streams": 13,
    "test_export_serving.py::test_base_path_layout_config_and_signatures": 11,
    "test_export_tflite.py::test_the_export_has_builtin_ops_only": 11,
    "test_train.py::test_train_only_the_encoder_keeps_the_decoder": 11,
    "test_cnn_transforms.py::test_trained_tiny_cnn_codes_files_that_decode_exactly": 11,
    "test_codec.py::test_refinement_optimizes_the_distortion_the_model_was_trained_for": 10,
    "test_refinement.py::test_refinement_lowers_the_loss_and_is_deterministic": 10,
    "test_lite.py::test_numpy_coder_writes_the_savedmodels_streams_in_serial_order": 10,
    "test_multi_worker.py::"
    "test_a_killed_worker_stops_the_other_and_the_checkpoint_is_kept": 10,
    "test_evaluation.py::test_cli_refined_tflic_results_do_not_mix_with_plain_ones": 9,
    "test_entropy_core.py::test_c_core_codes_the_numpy_streams_cnn_hyper_synthesis": 9,
    "test_deterministic.py::"
    "test_coding_tables_are_stored_beside_the_checkpoint_and_reused": 8,
    "test_refinement.py::test_ms_ssim_models_are_refined_for_ms_ssim": 7,
    "test_export_serving.py::test_stock_servable_without_tfc": 7,
    "test_tfds.py::test_train_two_steps_from_tfds": 7,
    "test_codec.py::test_random_corruptions_fail_cleanly": 6,
    "test_train.py::test_mixed_precision_training_steps_and_restores_as_float32": 6,
    "test_train.py::test_weights_average_follows_its_decay_and_lives_in_the_checkpoints": 6,
    "test_cli.py::test_compress_many": 6,
    "test_codec.py::test_savedmodel_round_trips_in_a_plain_process": 5,
    "test_export_serving.py::test_split_encoder_tiles_as_the_codec_does": 5,
    "test_tiling.py::test_tiles_compute_what_one_piece_does_and_need_their_margin": 3,
    "test_evaluation.py::test_cli_visual_sheet_shows_each_codec_at_tflics_file_size": 5,
    "test_widening.py::test_a_widened_model_computes_what_the_narrow_one_did": 5,
    "test_refinement.py::test_default_step_size_is_the_budget_over_the_steps": 5,
    "test_entropy_core.py::test_decoder_core_under_sanitizers": 4,
    "test_entropy_core.py::test_bundled_model_decodes_its_own_files_as_numpy_does": 4,
    "test_refinement.py::test_padding_does_not_count_in_the_loss": 3,
    "test_codec.py::test_round_trip_equals_coded_forward": 3,
    "test_cli.py::test_single_file_round_trip": 3,
    "test_evaluation.py::test_cli_end_to_end_writes_everything_and_resumes": 3,
    "test_train.py::test_init_from_maps_the_gains_onto_other_lambdas": 3,
    "test_range_coder_ops.py::test_saved_model_loads_in_a_fresh_process": 3,
    "test_train.py::test_init_from_grows_a_trained_model_without_changing_it": 3,
    "test_train.py::test_init_from_refuses_a_model_that_does_not_fit": 3,
    "test_train.py::"
    "test_ms_ssim_loss_is_its_rate_plus_weighted_distortion_with_finite_gradients": 3,
    "test_export_serving.py::test_rest_split_encoder_on_loopback": 3,
    "test_tfds.py::test_a_fresh_process_loads_it_with_tfds_alone": 3,
    "test_lite.py::test_the_bundled_lite_files_are_the_bundled_models": 8,
    "test_bundle_model.py::test_the_model_and_its_lite_files_replace_the_bundled_ones": 3,
    "test_bundle_model.py::test_bad_input_is_refused_in_one_line_and_changes_nothing": 3,
    "test_bundle_model.py::test_the_average_is_bundled_where_the_checkpoint_keeps_one": 1,
    "test_cli.py::test_the_fast_path_never_imports_tensorflow": 4,
    "test_fused_ops.py::test_inference_and_disabled_paths_use_no_fused_op": 2,
    "test_fused_ops.py::test_fused_layers_compute_the_composite_values_and_gradients": 1,
    "test_fused_ops.py::test_the_models_fused_rate_is_tfcs_with_the_same_noise": 3,
    "test_export_tflite.py::test_the_export_is_the_codecs_synthesis": 2,
    "test_export_tflite.py::test_the_analysis_matches_tensorflow_at_any_size": 2,
    "test_robustness.py::test_ctrl_c_stops_compress_inside_a_long_tensorflow_call": 2,
    "test_entropy_core.py::test_c_core_codes_the_numpy_streams_serial": 2,
    "test_model.py::"
    "test_rounded_hyper_input_is_the_codecs_z_hat_with_straight_through_gradient": 2,
    "test_entropy_core.py::test_c_core_codes_the_numpy_streams_wavefront": 2,
    "test_model.py::test_decoders_latent_is_a_fixed_point_of_the_rounded_context": 2,
    "test_model.py::test_any_size_is_padded_and_cropped": 2,
    "test_lite.py::test_decode_step_contexts_match_the_teacher_forced_pass": 2,
    "test_widening.py::test_the_copies_of_a_widened_channel_get_different_gradients": 2,
    "test_model.py::test_rounded_context_is_within_half_a_step_and_straight_through": 2,
    "test_context_model.py::test_parallel_pass_equals_coding_order": 2,
    "test_widening.py::"
    "test_a_widening_that_does_not_fit_is_refused[embed_dims1-num_heads1-needs": 2,
    "test_model.py::test_coded_forward_rounds_around_the_mean": 1,
    "test_range_coder.py::test_asan_fuzz_script": 1,
    "test_export_tflite.py::"
    "test_a_shifted_block_converts_and_computes_the_layers_floats": 1,
    "test_train.py::test_lambda_weights_set_how_often_each_lambda_is_drawn": 1,
    "test_train.py::test_loss_weights_scale_each_lambdas_gradient_not_its_logged_loss": 4,
    "test_train.py::test_nan_loss_stops_and_keeps_last_good_checkpoint": 1,
    "test_deterministic.py::test_a_flipped_table_index_is_a_desync_error": 1,
    "test_train.py::test_resume_point_is_the_average_and_seeds_a_new_run": 20,
    "test_widening.py::"
    "test_a_widening_that_does_not_fit_is_refused[embed_dims0-num_heads0-not": 1,
}
_DEFAULT_COST = 0.2
# Session fixtures that build tiny models (tens of seconds for the first test using them):
# tests that need them are not in the `fast` subset.
_MODEL_FIXTURES = {"tiny_workdir", "tiny_serial_workdir", "tiny_model_dir", "tiny_lite_dir",
                   "tiny_codec", "tiny_module", "tiny_serial_module"}


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "fast: a test of under a second that builds no model (`pytest -m fast`: "
      "the edit loop's subset; set in conftest from _COSTS)")
# Files whose tests share an expensive module-scoped fixture: kept together on one worker.
_TOGETHER = ()


def pytest_collection_modifyitems(config, items):
  """Orders the tests for `pytest -n N --dist worksteal`, which first hands worker i the
  i-th of N equal runs of the list (and later lets an idle worker take the second half of
  the busiest one's queue): the expensive tests are spread over the runs so that each
  starts with its share (longest first), and the many short ones follow."""
  for item in items:
    if (_COSTS.get(f"{item.path.name}::{item.originalname}", _DEFAULT_COST) < 1 and
        not _MODEL_FIXTURES & set(getattr(item, "fixturenames", ()))):
      item.add_marker(pytest.mark.fast)
  units = {}  # a test, or a _TOGETHER file's tests
  for index, item in enumerate(items):
    key = item.path.name if item.path.name in _TOGETHER else index
    units.setdefault(key, []).append(item)
  cost = lambda unit: sum(_COSTS.get(f"{item.path.name}::{item.originalname}", _DEFAULT_COST)
                          for item in unit)
  ordered = sorted(units.values(), key=cost, reverse=True)  # stable: ties keep their order
  workers = config.getoption("numprocesses", None) if config.pluginmanager.hasplugin(
      "xdist") else None
  if not isinstance(workers, int) or workers < 2:
    items[:] = [item for unit in ordered for item in unit]
    return
  sizes = [len(items) // workers] * workers  # worksteal's first split (the rest: last)
  sizes[-1] += len(items) - sum(sizes)
  runs = [[] for _ in range(workers)]
  loads = [0] * workers
  for unit in ordered:  # largest first, each to the least loaded run it fits in
    fits = [i for i in range(workers) if len(unit) <= sizes[i]] or [
        max(range(workers), key=lambda i: sizes[i])]
    i = min(fits, key=lambda i: loads[i])
    runs[i].extend(unit)
    loads[i] += cost(unit)
    sizes[i] -= len(unit)
  items[:] = [item for run in runs for item in run]


def _shared(name):
  path = SHARED_DATA / name
  if not path.is_dir():
    pytest.fail(f"{name} images not found at {path}")
  return path


@pytest.fixture(scope="session")
def train_dir():
  return _shared("train")


@pytest.fixture(scope="session")
def kodak_dir():
  return _shared("kodak")


@contextlib.contextmanager
def _locked(path):
  with open(path, "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def _built_once(tmp_path_factory, name, build):
  """The directory `name`, made by `build(path)` once per test run: under pytest-xdist,
  the first worker to ask makes it (the others wait on a file lock) and all use it.

  A directory is only published complete (renamed into place when `build` returns).
  Tests must not write into it.
  """
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent  # the run's directory, shared by its workers
  root = root / "built_once"
  root.mkdir(exist_ok=True)
  path = root / name
  with _locked(root / f".{name}.lock"):
    if not path.exists():
      staging = root / f".{name}.building"
      if staging.exists():
        shutil.rmtree(staging)
      staging.mkdir()
      build(staging / name)
      os.rename(staging / name, path)
      staging.rmdir()
  return path


def _random_tiny_workdir(path, mode):
  """A tiny model with random weights, saved as a training directory with its coding
  tables (made here, so that no test writes them into the shared directory)."""
  import json  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tflic.codec.deterministic import tables  # pylint: disable=g-import-not-at-top
  from tflic import config  # pylint: disable=g-import-not-at-top
  from tflic.model import checkpoint  # pylint: disable=g-import-not-at-top
  d = json.loads(config.load("tiny").to_json())
  d["model"]["context_mode"] = mode
  cfg = config.from_dict(d)
  tf.random.set_seed(0)
  model = checkpoint.build_model(cfg)
  # Gains > 1 make the latents span several symbols, as in a trained model; growing
  # with the lambda, as trained gains do, so that files grow with the quality.
  lambdas = model.log_gains.shape[0]
  model.log_gains.assign(tf.random.uniform(model.log_gains.shape, 0.5, 1.0) +
                         tf.linspace(0.0, 1.0, lambdas)[:, None])
  checkpoint.save_model(str(path), cfg, model)
  tables.load_or_create(checkpoint.latest_checkpoint(str(path)), model)


@pytest.fixture(scope="session")
def tiny_workdir(tmp_path_factory):
  """Training directory of a random tiny wavefront model."""
  return _built_once(tmp_path_factory, "tiny_wavefront",
                     lambda path: _random_tiny_workdir(path, "wavefront"))


@pytest.fixture(scope="session")
def tiny_serial_workdir(tmp_path_factory):
  """Training directory of a random tiny serial-mask model."""
  return _built_once(tmp_path_factory, "tiny_serial",
                     lambda path: _random_tiny_workdir(path, "serial"))


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_workdir, tmp_path_factory):
  """Exported SavedModel of the tiny wavefront model (usable as --model)."""
  from tflic.deploy import savedmodel  # pylint: disable=g-import-not-at-top
  return _built_once(tmp_path_factory, "tiny_export",
                     lambda path: savedmodel.export_checkpoint(str(tiny_workdir), str(path)))


@pytest.fixture(scope="session")
def tiny_lite_dir(tiny_workdir, tmp_path_factory):
  """LiteRT export (`python -m export.tflite`) of the tiny wavefront model; its files have
  the fingerprint of the tiny model's SavedModel (tiny_model_dir)."""
  import sys  # pylint: disable=g-import-not-at-top
  if str(REPO) not in sys.path:  # export/ is not installed with tflic
    sys.path.append(str(REPO))
  from export import tflite  # pylint: disable=g-import-not-at-top
  from tflic.deploy import savedmodel  # pylint: disable=g-import-not-at-top
  return _built_once(
      tmp_path_factory, "tiny_lite",
      lambda path: tflite.export(savedmodel.restore_model(str(tiny_workdir)), str(path)))


@pytest.fixture(scope="session")
def tiny_codec(tiny_model_dir):
  """tf_codec.load of the tiny SavedModel (tiny_model_dir), loaded once per process: the
  Codec that `tflic compress/decompress --model=<tiny_model_dir>` run in this process
  (run_main) load and keep (codec_cli._load_model), so the one load serves both.
  Tests must not change it."""
  from tflic.codec import tf_codec  # pylint: disable=g-import-not-at-top
  from tflic import codec_cli  # pylint: disable=g-import-not-at-top
  loaded = codec_cli._load_model(str(tiny_model_dir))  # pylint: disable=protected-access
  assert isinstance(loaded, tf_codec.Codec)
  return loaded


@pytest.fixture(scope="session")
def tiny_module(tiny_workdir):
  """The CodecModule of the tiny wavefront training directory (tf_codec.module_from_workdir),
  traced once per process. Tests must not change it or its model."""
  from tflic.codec import tf_codec  # pylint: disable=g-import-not-at-top
  return tf_codec.module_from_workdir(str(tiny_workdir))[0]


@pytest.fixture(scope="session")
def tiny_serial_module(tiny_serial_workdir):
  """As tiny_module, of the tiny serial-mask model."""
  from tflic.codec import tf_codec  # pylint: disable=g-import-not-at-top
  return tf_codec.module_from_workdir(str(tiny_serial_workdir))[0]


@pytest.fixture
def run_main(capfd):
  """Runs `tflic ARGS` in this process, as the command does (flag parsing, one-line
  errors): (exit status, stdout, stderr). The subcommand's module must be imported
  before (its flags must exist before a flagsaver saves them)."""
  # TensorFlow imported after app.run has started is broken (see codec_cli._codec_module),
  # and this process (other tests, fixtures) imports it later: import it first.
  import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl.testing import flagsaver  # pylint: disable=g-import-not-at-top
  from tflic import cli  # pylint: disable=g-import-not-at-top
  app.define_help_flags()  # else app.run defines them inside a flagsaver, which drops them

  def run(*args):
    with flagsaver.flagsaver():  # each run starts from the default flag values
      try:
        status = cli.main(["tflic", *map(str, args)])
      except SystemExit as e:
        status = e.code
    out, err = capfd.readouterr()
    return status, out, err

  return run
