"""Saving a data-parallel TrainState (crossjepa.training.checkpoint): replicated arrays are written
without orbax's per-array device slicing programs (`state_handler`), read back exactly with their
sharding, and stay readable by orbax's StandardCheckpointHandler."""
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from crossjepa.training import checkpoint

BACKEND_COMPILE = '/jax/core/compile/backend_compile_duration'   # jax._src.dispatch


def _replicated_state():
  mesh = Mesh(np.array(jax.devices()), ('data',))     # the suite's 8 fake devices
  rep = NamedSharding(mesh, P())
  rs = np.random.RandomState(0)
  shapes = [(64, 48), (48,), (3, 64), (48, 64, 2)] * 10
  state = {'params': {f'w{i}': jax.device_put(rs.normal(size=s).astype(np.float32), rep)
                      for i, s in enumerate(shapes)},
           'step': jax.device_put(np.int32(7), rep)}
  return state, rep


class _Compiles:
  """Counts XLA backend compiles while active."""

  def __enter__(self):
    self.count = 0
    jax.monitoring.register_event_duration_secs_listener(self._on)
    return self

  def _on(self, event, duration, **kwargs):
    del duration, kwargs
    if event == BACKEND_COMPILE:
      self.count += 1

  def __exit__(self, *exc):
    jax.monitoring.unregister_event_duration_listener(self._on)


def test_replicated_state_saves_without_compiles_and_restores_exactly(tmp_path):
  assert jax.device_count() == 8
  state, rep = _replicated_state()
  config = ml_collections.ConfigDict({'note': 'test'})

  manager = checkpoint.make_manager(str(tmp_path / 'ours'))
  with _Compiles() as ours:
    checkpoint.save(manager, 7, state, None, config)
    manager.wait_until_finished()
  # orbax's default handler cuts every replicated array on the device first: one small compile
  # per array shape (the contrast this guards against; measured 12 s of a 79 s smoke run).
  std = ocp.CheckpointManager(str(checkpoint.checkpoint_dir(tmp_path / 'standard')), item_names=('state',),
                              item_handlers={'state': ocp.StandardCheckpointHandler()})
  with _Compiles() as default:
    std.save(7, args=ocp.args.Composite(state=ocp.args.StandardSave(state)), force=True)
    std.wait_until_finished()
  std.close()
  assert ours.count == 0, ours.count
  assert default.count >= 4, default.count     # 4 distinct shapes, each sliced per replica

  abstract = jax.eval_shape(lambda: state)
  shardings = jax.tree.map(lambda _: rep, state)
  got = checkpoint.restore(manager, 7, abstract, shardings)
  manager.close()
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(got)):
    assert b.sharding == rep
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  # The files are orbax's standard layout: StandardCheckpointHandler reads ours ...
  reader = ocp.CheckpointManager(str(checkpoint.checkpoint_dir(tmp_path / 'ours')), item_names=('state',),
                                 item_handlers={'state': ocp.StandardCheckpointHandler()})
  target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        abstract, shardings)
  other = reader.restore(7, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))['state']
  reader.close()
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), state, other)
  # ... and restore_params reads a checkpoint StandardCheckpointHandler wrote (older runs).
  old = checkpoint.make_manager(str(tmp_path / 'standard'), create=False)
  again = checkpoint.restore(old, 7, abstract, shardings)
  old.close()
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), state, again)
