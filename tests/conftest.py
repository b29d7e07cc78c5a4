"""Test set-up: 8 fake CPU devices (set before jax is imported) and absl flags marked parsed."""
import os
import sys

# XLA:CPU's legacy loop emitters instead of the MLIR fusion emitters: compile is most of the suite's
# time, and train steps compile faster with them (the smoke step 4.6-4.9 s -> 2.9-3.8 s, the seed
# recipe's 21 -> 13 s; the seed init did not: 14 -> 16 s). Measured whole: test_step.py plus
# test_recipes_main.py in one process, 325 -> 280 s in one session. Subprocesses that must compute
# bit for bit what this process does take this variable as it is (test_sigkill).
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8 '
                      '--xla_cpu_use_fusion_emitters=false')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# One persistent XLA cache for the whole run, shared by the xdist workers (they inherit this
# process's environment) and the subprocesses the tests start: the smoke configs' programs compile
# once instead of once per module (measured in one session: 579 -> 519 s for 520 tests on 2 cores).
# A size limit turns on jax's file lock, so a worker never reads an entry another is writing.
# Removed when the run ends (pytest_unconfigure); a cache given from outside is left alone.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  import tempfile  # pylint: disable=g-import-not-at-top
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='crossjepa-tests-xla-')
  os.environ['CROSSJEPA_TESTS_OWN_XLA_CACHE'] = os.environ['JAX_COMPILATION_CACHE_DIR']
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.3')
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
  os.environ.setdefault('JAX_COMPILATION_CACHE_MAX_SIZE', str(4 << 30))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()


import pytest  # noqa: E402


@pytest.fixture(scope='module')
def persistent_compile_cache(tmp_path_factory):
  """For modules whose runs compile the same programs again (resume, benchmark seeds): XLA's
  persistent cache makes the repeats cheap. Scoped to the module, then the old settings return.
  Yields the environment variables that give a child process the same cache."""
  import jax  # pylint: disable=g-import-not-at-top
  keys = ('jax_compilation_cache_dir', 'jax_persistent_cache_min_compile_time_secs',
          'jax_persistent_cache_min_entry_size_bytes')
  old = {k: getattr(jax.config, k) for k in keys}
  folder = str(tmp_path_factory.mktemp('xla_cache'))
  jax.config.update('jax_compilation_cache_dir', folder)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  yield {'JAX_COMPILATION_CACHE_DIR': folder, 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
         'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0'}
  for k, v in old.items():
    jax.config.update(k, v)


# Modules by measured serial time (2 cores), heaviest first: with one worker per core (pyproject's
# addopts) the long modules start at once and the short ones fill in behind them. The three that
# run subprocesses (sigkill, multiprocess, console) alternate with in-process ones, so that two of
# them do not oversubscribe the cores together. Unlisted modules keep pytest's order after these.
_HEAVY_FIRST = ('test_step', 'test_sigkill', 'test_recipes_main', 'test_multiprocess', 'test_loop',
                'test_console', 'test_teacher', 'test_efficientnet_lite', 'test_attention',
                'test_remat', 'test_benchmark_table', 'test_vit', 'test_teacher_protocol',
                'test_benchmarks')


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(_HEAVY_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))


def pytest_unconfigure(config):
  """The run's own XLA cache removed by the process that made it (the controller, not a worker)."""
  own = os.environ.get('CROSSJEPA_TESTS_OWN_XLA_CACHE')
  if own and not hasattr(config, 'workerinput') and own == os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(own, ignore_errors=True)
