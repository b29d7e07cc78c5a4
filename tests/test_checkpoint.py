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


def _trained_state(flat: bool, rules):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from crossjepa.training import state as state_lib  # pylint: disable=g-import-not-at-top
  optim = ml_collections.ConfigDict(dict(steps=10, lr=1e-2, min_lr=0.0, warmup_steps=2,
                                         weight_decay=0.1, b1=0.9, b2=0.95, grad_clip=1.0))
  rs = np.random.RandomState(1)
  params = {'enc': {'w': jnp.asarray(rs.normal(size=(5, 4)), jnp.float32),
                    'bias': jnp.asarray(rs.normal(size=(4,)), jnp.float32)},
            'head': {'w': jnp.asarray(rs.normal(size=(4, 3)), jnp.float32)},
            'frozen': jnp.asarray(rs.normal(size=(6,)), jnp.float32)}
  state = state_lib.create(params, {'enc': params['enc']}, optim, rules, flat)
  for i in range(3):
    grads = jax.tree.map(lambda x, i=i: jnp.full_like(x, 0.1 * (i + 1)) + 0.01 * x, params)
    state = state.apply_gradients(grads=grads)
  return state, optim


def _moments(state, rules):
  from crossjepa.training import state as state_lib  # pylint: disable=g-import-not-at-top
  return state_lib.moments_of(state_lib.opt_entries(state), state.params,
                              state_lib.param_labels(state.params, rules))


def test_optimizer_state_moves_between_the_flat_and_the_per_leaf_layout(tmp_path):
  """A checkpoint of the per-leaf optax chain (an FSDP run, or one from before the flat
  optimizer) resumes into the flat layout and back: every Adam moment lands on its parameter."""
  import pytest  # pylint: disable=g-import-not-at-top
  from crossjepa.training import state as state_lib  # pylint: disable=g-import-not-at-top
  rules = ((r'frozen', {'freeze': True}), (r'.*bias', {'weight_decay': False}))
  mesh = Mesh(np.array(jax.devices()).reshape(8, 1), ('data', 'fsdp'))
  rep = NamedSharding(mesh, P())
  for saved_flat in (False, True):
    state, optim = _trained_state(saved_flat, rules)
    manager = checkpoint.make_manager(str(tmp_path / f'flat{saved_flat}'))
    checkpoint.save(manager, 3, state, None, ml_collections.ConfigDict({'note': 'test'}))
    manager.wait_until_finished()
    abstract = jax.eval_shape(lambda s: state_lib.create(s.params, s.ema_params, optim, rules,
                                                        not saved_flat), state)
    shardings = jax.tree.map(lambda _: rep, abstract)
    got = checkpoint.restore(manager, 3, abstract, shardings, param_rules=rules)
    assert isinstance(got.opt_state, state_lib.FlatAdamWState) is (not saved_flat)
    assert jax.tree.structure(got) == jax.tree.structure(abstract)
    for a, b in zip(jax.tree.leaves((state.step, state.params, state.ema_params)),
                    jax.tree.leaves((got.step, got.params, got.ema_params))):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert all(x.sharding == rep for x in jax.tree.leaves(got))
    count, want = _moments(state, rules)
    got_count, have = _moments(got, rules)
    assert count == got_count == 3 and sorted(want) == sorted(have) == ['enc/bias', 'enc/w', 'head/w']
    for path in want:
      for kind in ('mu', 'nu'):
        assert np.abs(want[path][kind]).min() > 0
        np.testing.assert_array_equal(want[path][kind], have[path][kind])
    # a parameter that was frozen when the checkpoint was written has no moments to resume from;
    # the flat layout's groups are those of the rules it was written with
    expected = ('param_rules changed since the checkpoint' if saved_flat
                else "no Adam mu for parameter 'frozen'")
    thawed = jax.eval_shape(lambda s: state_lib.create(s.params, s.ema_params, optim, rules[1:],
                                                      not saved_flat), state)
    with pytest.raises(ValueError, match=expected):
      checkpoint.restore(manager, 3, thawed, jax.tree.map(lambda _: rep, thawed),
                         param_rules=rules[1:])
    manager.close()


def test_a_damaged_checkpoint_is_one_error_naming_the_step(tmp_path):
  """A flipped b-tree node of the step's OCDBT index: restore raises one ValueError naming the
  step's folder and the way out (delete it: the run resumes from the one
  before), not tensorstore's JSON spec."""
  import os  # pylint: disable=g-import-not-at-top
  import pytest  # pylint: disable=g-import-not-at-top
  state, rep = _replicated_state()
  manager = checkpoint.make_manager(str(tmp_path))
  checkpoint.save(manager, 7, state, None, ml_collections.ConfigDict({'note': 'test'}))
  manager.wait_until_finished()
  index = os.path.join(str(checkpoint.checkpoint_dir(tmp_path)), '7', 'state', 'd')
  node = max((os.path.join(index, f) for f in os.listdir(index)), key=os.path.getsize)
  data = bytearray(open(node, 'rb').read())
  for i in range(len(data) // 2, len(data) // 2 + 64):
    data[i] ^= 0xFF
  with open(node, 'wb') as f:
    f.write(data)
  abstract = jax.eval_shape(lambda: state)
  where = f'{manager.directory}/7'
  with pytest.raises(ValueError) as e:
    checkpoint.restore(manager, 7, abstract, jax.tree.map(lambda _: rep, state))
  manager.close()
  msg = str(e.value)
  assert msg.startswith(f'{where}: the Orbax checkpoint does not read ('), msg
  assert 'checksum verification failed' in msg and 'tensorstore_spec' not in msg, msg
  assert msg.endswith(f'delete {where} to resume from the checkpoint before it (or use a fresh '
                      '--workdir)') and '\n' not in msg, msg
