"""Writers of tiny files in the exact layouts of the public benchmarks (shared/DATASETS.md).

Used by tests/test_benchmarks.py. The clouds are simple class-dependent shapes (an anisotropic
Gaussian blob per class, plus noise), so that a probe has something to find; the layouts, file names,
h5 keys, dtypes and shapes are the releases' own.
"""
import json
import os

import h5py
import numpy as np

MODELNET40 = ('airplane bathtub bed bench bookshelf bottle bowl car chair cone cup curtain desk door '
              'dresser flower_pot glass_box guitar keyboard lamp laptop mantel monitor night_stand '
              'person piano plant radio range_hood sink sofa stairs stool table tent toilet tv_stand '
              'vase wardrobe xbox').split()
SCANOBJECTNN_FOLDERS = {   # variant -> (folder, file suffix), as in the official h5_files
    'OBJ_BG': ('main_split', '_objectdataset.h5'),
    'OBJ_ONLY': ('main_split_nobg', '_objectdataset.h5'),
    'PB_T50_RS': ('main_split', '_objectdataset_augmentedrot_scale75.h5'),
}


def class_cloud(label: int, num_points: int, rng: np.random.Generator) -> np.ndarray:
  """[num_points, 3] f32: a blob whose axis lengths depend on the class."""
  axes = np.array([1.0 + 0.6 * (label % 3), 1.0 + 0.5 * ((label // 3) % 3), 0.4 + 0.3 * (label % 2)])
  return (rng.normal(size=(num_points, 3)) * axes).astype(np.float32)


def write_modelnet40_h5(root, labels_by_split, points=2048, per_file=None, seed=0):
  """PointNet's modelnet40_ply_hdf5_2048: ply_data_<split><k>.h5 (data f32 (n,2048,3), label u8
  (n,1)), shape_names.txt, <split>_files.txt, ply_data_<split>_<k>_id2file.json. -> {split: data}."""
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, 'shape_names.txt'), 'w') as f:
    f.write('\n'.join(MODELNET40) + '\n')
  rng = np.random.default_rng(seed)
  out = {}
  for split, labels in labels_by_split.items():
    labels = list(labels)
    per = per_file or len(labels)
    listing, chunks = [], []
    for k, start in enumerate(range(0, len(labels), per)):
      part = labels[start:start + per]
      data = np.stack([class_cloud(l, points, rng) for l in part])
      data /= np.max(np.linalg.norm(data, axis=-1), axis=1)[:, None, None]   # unit sphere, as released
      name = f'ply_data_{split}{k}.h5'
      with h5py.File(os.path.join(root, name), 'w') as f:
        f['data'] = data.astype(np.float32)
        f['label'] = np.asarray(part, np.uint8).reshape(-1, 1)
        f['normal'] = np.zeros_like(data, np.float32)
        f['faceId'] = np.zeros(data.shape[:2], np.int32)
      with open(os.path.join(root, f'ply_data_{split}_{k}_id2file.json'), 'w') as f:
        json.dump([f'{MODELNET40[l]}/{MODELNET40[l]}_{start + i + 1:04d}.ply'
                   for i, l in enumerate(part)], f)
      listing.append(f'data/modelnet40_ply_hdf5_2048/{name}')
      chunks.append(data)
    with open(os.path.join(root, f'{split}_files.txt'), 'w') as f:
      f.write('\n'.join(listing) + '\n')
    out[split] = np.concatenate(chunks)
  return out


MODELNET10 = 'bathtub bed chair desk dresser monitor night_stand sofa table toilet'.split()


def write_modelnet40_normal_resampled(root, labels_by_split, points=100, seed=0, lists='modelnet40'):
  """modelnet40_normal_resampled: <class>/<class>_NNNN.txt (x,y,z,nx,ny,nz), the shape-name and
  split id lists (`lists`: 'modelnet40', or 'modelnet10' for the release's ModelNet10 lists, whose
  labels index MODELNET10). -> {split: [ids]}."""
  names = MODELNET40 if lists == 'modelnet40' else MODELNET10
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, f'{lists}_shape_names.txt'), 'w') as f:
    f.write('\n'.join(names) + '\n')
  rng = np.random.default_rng(seed)
  counter = {}
  out = {}
  for split, labels in labels_by_split.items():
    ids = []
    for label in labels:
      cls = names[label]
      counter[cls] = counter.get(cls, 0) + 1
      sid = f'{cls}_{counter[cls]:04d}'
      os.makedirs(os.path.join(root, cls), exist_ok=True)
      xyz = class_cloud(label, points, rng)
      table = np.concatenate([xyz, rng.normal(size=xyz.shape)], axis=1)
      np.savetxt(os.path.join(root, cls, f'{sid}.txt'), table, fmt='%.6f', delimiter=',')
      ids.append(sid)
    with open(os.path.join(root, f'{lists}_{split}.txt'), 'w') as f:
      f.write('\n'.join(ids) + '\n')
    out[split] = ids
  return out


def write_scanobjectnn(root, variant, labels_by_split, points=2048, seed=0):
  """Official h5_files: <folder>/{training,test}<suffix> with data f32 (n,2048,3), label (n,),
  mask (n,2048) (-1 = background). -> {split: data}."""
  folder, suffix = SCANOBJECTNN_FOLDERS[variant]
  os.makedirs(os.path.join(root, folder), exist_ok=True)
  rng = np.random.default_rng(seed)
  out = {}
  for split, labels in labels_by_split.items():
    data = np.stack([class_cloud(l, points, rng) for l in labels]).astype(np.float32)
    name = ('training' if split == 'train' else 'test') + suffix
    with h5py.File(os.path.join(root, folder, name), 'w') as f:
      f['data'] = data
      f['label'] = np.asarray(labels, np.int64)
      f['mask'] = np.where(rng.random(data.shape[:2]) < 0.2, -1, 1).astype(np.int32)
    out[split] = data
  return out
