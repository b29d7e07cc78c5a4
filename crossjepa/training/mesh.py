"""The device mesh and the shardings of state and batch (big_vision / flax-examples style).

Mesh: axes ('data', 'fsdp') from `config.mesh` (data = -1 takes the devices fsdp leaves). The batch
is split over every mesh axis on its leading dimension. Parameter/optimizer sharding rule (simple on
purpose): with fsdp = 1 (or a mesh without an 'fsdp' axis) everything is replicated; otherwise every
state leaf with at least `FSDP_MIN_SIZE` elements is split over 'fsdp' along its largest axis
divisible by the fsdp size (ties to the last such axis), and the rest is replicated. XLA inserts the
all-gathers.
"""
from __future__ import annotations

from typing import Any, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

FSDP_MIN_SIZE = 2 ** 14


def make_mesh(config, devices: Optional[list] = None) -> Mesh:
  """Mesh with axes ('data', 'fsdp') over all (global) devices, from config.mesh."""
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  fsdp = int(config.mesh.fsdp)
  data = int(config.mesh.data)
  if fsdp < 1 or n % fsdp:
    raise ValueError(f'config.mesh.fsdp={fsdp} must be >= 1 and divide the {n} devices')
  if data == -1:
    data = n // fsdp
  if data * fsdp != n:
    raise ValueError(f'config.mesh: data={config.mesh.data} x fsdp={fsdp} must use all {n} devices')
  return Mesh(np.array(devices).reshape(data, fsdp), ('data', 'fsdp'))


def data_mesh(devices: Optional[list] = None) -> Mesh:
  """A mesh of pure data parallelism over `devices` (default: all): ('data', 'fsdp') = (n, 1)."""
  devices = list(jax.devices() if devices is None else devices)
  return Mesh(np.array(devices).reshape(len(devices), 1), ('data', 'fsdp'))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """The leading (batch) axis split over every axis of the mesh together."""
  return NamedSharding(mesh, P(tuple(mesh.axis_names)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def leaf_sharding(mesh: Mesh, shape) -> NamedSharding:
  """The FSDP rule of the module docstring for one array shape."""
  fsdp = dict(mesh.shape).get('fsdp', 1)
  if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < FSDP_MIN_SIZE:
    return replicated(mesh)
  best = None
  for axis, size in enumerate(shape):
    if size % fsdp == 0 and (best is None or size >= shape[best]):
      best = axis
  if best is None:
    return replicated(mesh)
  spec = [None] * len(shape)
  spec[best] = 'fsdp'
  return NamedSharding(mesh, P(*spec))


def state_shardings(mesh: Mesh, abstract_state) -> Any:
  return jax.tree.map(lambda x: leaf_sharding(mesh, x.shape), abstract_state)


def check_batch_size(mesh: Mesh, global_batch_size: int, where: str) -> None:
  """A global batch must split evenly over the mesh's devices."""
  n = mesh.devices.size
  if global_batch_size % n:
    raise ValueError(f'{where} = {global_batch_size} is not a multiple of the {n} devices the '
                     'batch is sharded over')


def global_batch(batch, sharding: NamedSharding):
  """Host-local numpy batch -> global jax.Arrays (each process passes its own rows)."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                      batch)
