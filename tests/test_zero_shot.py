"""Zero-shot 3D classification through the teacher's ImageNet classifier: the class mapping against
TFDS's ImageNet names, the decision rule by brute force, the classifier against the teacher's own
logits, when it does not apply, and a whole run with the ImageNet Lite0 from its wheel."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import formats  # pylint: disable=g-bad-import-order
from crossjepa import classify
from crossjepa import run as run_lib
from crossjepa.data import meshes
from crossjepa.data import pipeline
from crossjepa.data import records
from crossjepa.data import sampling
from crossjepa.data import synthetic
from crossjepa.evaluation import export as export_lib
from crossjepa.evaluation import features as features_lib
from crossjepa.evaluation import plots
from crossjepa.evaluation import protocol
from crossjepa.evaluation import zero_shot
from crossjepa.weights import teacher_conversion
from crossjepa.weights import teacher_io
from tests.test_benchmarks import bench_config
from tests.test_step import smoke_config


def test_the_mapping_names_imagenet_classes():
  names = zero_shot.imagenet_class_names()
  assert names[504].startswith('coffee mug') and names[0].startswith('tench')
  got = zero_shot.class_indices(['box', 'mug', 'bottle', 'chair', 'cross'])
  assert got == {1: [504], 2: [440, 737, 898, 907], 3: [559, 765]}
  # every mapped class is a synthetic class, every name an ImageNet class, none given twice
  assert set(zero_shot.IMAGENET_NAMES) <= set(synthetic.CLASS_NAMES)
  full = zero_shot.class_indices(synthetic.CLASS_NAMES)
  assert len(full) == len(zero_shot.IMAGENET_NAMES) == 20
  flat = [i for v in full.values() for i in v]
  assert len(flat) == len(set(flat))
  with pytest.raises(ValueError, match="'mug': 'tea mug' is not an ImageNet class name"):
    zero_shot.class_indices(['mug'], {'mug': ('tea mug',)})
  with pytest.raises(ValueError, match="'cup' is given to both 'mug' and 'goblet'"):
    zero_shot.class_indices(['mug', 'goblet'], {'mug': ('cup',), 'goblet': ('cup',)})


def test_every_source_has_a_table():
  """Each source's table names only its classes and real ImageNet classes, none twice; how many
  classes each covers; mesh_folder has none but a file's."""
  from crossjepa.data import source_scanobjectnn  # pylint: disable=g-import-not-at-top
  vocabularies = {'synthetic': synthetic.CLASS_NAMES, 'modelnet40': formats.MODELNET40,
                  'scanobjectnn': source_scanobjectnn.SCANOBJECTNN_CLASSES,
                  'shapenet55': sorted(zero_shot.SHAPENET55_NAMES)}
  covered = {}
  for source, names in vocabularies.items():
    table = zero_shot.MAPPINGS[source]
    assert set(table) <= set(names), source
    got = zero_shot.class_indices(names, table)
    flat = [i for v in got.values() for i in v]
    assert len(flat) == len(set(flat)), source
    covered[source] = (len(got), len(names))
  assert covered == {'synthetic': (20, 48), 'modelnet40': (30, 40), 'scanobjectnn': (15, 15),
                     'shapenet55': (50, 55)}
  assert len(set(zero_shot.SHAPENET55_NAMES.values())) == 55
  assert len(zero_shot.class_indices(formats.MODELNET10, zero_shot.MODELNET40)) == 9   # not night_stand
  c = smoke_config()
  c.data.source = 'mesh_folder'
  assert zero_shot.mapping_for(c, ['chair']) == {}
  assert zero_shot.display_name('shapenet55', '03001627') == 'chair (03001627)'


def test_a_bad_class_file_stops_the_run_before_it_starts(tmp_path):
  """eval.zero_shot_classes is checked before the first stage (not after pretraining)."""
  c = smoke_config()
  (tmp_path / 'classes.json').write_text(json.dumps({'mug': ['tea mug']}))
  c.eval.zero_shot_classes = str(tmp_path / 'classes.json')
  with pytest.raises(run_lib.UserError, match=r"eval.zero_shot_classes: .*classes.json: zero-shot "
                     r"mapping 'mug': 'tea mug' is not an ImageNet class name"):
    run_lib.run(c, str(tmp_path / 'run'), 'all')
  assert not os.path.exists(tmp_path / 'run' / 'data')
  c.eval.zero_shot_classes = str(tmp_path / 'missing.json')
  with pytest.raises(run_lib.UserError, match=r'missing.json.*no such file'):
    run_lib.run(c, str(tmp_path / 'run'), 'evaluate')
  assert not os.path.exists(tmp_path / 'run' / 'data')
  with pytest.raises(run_lib.UserError) as e:    # no evaluation stage: not read
    run_lib.run(c, str(tmp_path / 'run'), 'pretrain')
  assert 'missing.json' not in str(e.value)
  c.eval.zero_shot = False
  with pytest.raises(run_lib.UserError) as e:    # switched off: not read either
    run_lib.run(c, str(tmp_path / 'run'), 'evaluate')
  assert 'missing.json' not in str(e.value)


def test_decision_rule_by_brute_force():
  rng = np.random.default_rng(0)
  indices = {0: [3, 7], 2: [1], 5: [10, 11, 12]}
  logits = rng.normal(size=(200, 20))
  labels = rng.choice([0, 1, 2, 5], size=200)
  pred = zero_shot.predict(logits, indices)
  for row, p in zip(logits, pred):
    best = max((row[i], c) for c, idx in indices.items() for i in idx)[1]
    assert p == best
  acc = zero_shot.accuracy(logits, labels, indices)
  keep = labels != 1
  assert acc['objects'] == keep.sum() and acc['classes'] == 3 and acc['chance'] == 1 / 3
  assert acc['accuracy'] == pytest.approx(np.mean(pred[keep] == labels[keep]))
  # logits that put each object's own class first are all right
  perfect = np.full((4, 20), -1.0)
  for r, c in enumerate([0, 2, 5, 0]):
    perfect[r, indices[c][-1]] = 5.0
  assert zero_shot.accuracy(perfect, [0, 2, 5, 0], indices)['accuracy'] == 1.0
  with pytest.raises(ValueError, match='no object of the split has a mapped class'):
    zero_shot.accuracy(logits[:3], [1, 1, 1], indices)


@pytest.fixture(scope='module')
def lite0(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('lite0') / 'lite0')
  teacher_conversion.convert_efficientnet_lite(path, variant='lite0', feature_stage='stage5')
  return teacher_io.load_teacher(path)


def test_classifier_is_the_teachers_own(lite0):
  """The view average of the global embedding through the extracted classifier equals the view
  average of the teacher's own logits (the classifier is affine)."""
  kernel, bias = zero_shot.classifier(lite0)
  assert kernel.shape == (1280, 1000) and bias.shape == (1000,)
  images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3)).astype(np.uint8)
  out = lite0(images)
  np.testing.assert_allclose(out['global'].mean(0) @ kernel + bias, out['logits'].mean(0),
                             rtol=1e-4, atol=1e-4)


def test_when_it_does_not_apply():
  c = smoke_config()
  assert zero_shot.not_applicable(c) is None and zero_shot.has_head(c)   # smoke: target object
  c.eval.zero_shot = False
  assert zero_shot.not_applicable(c) == 'eval.zero_shot = False'
  c = smoke_config()
  c.data.eval_only = True
  assert 'no teacher embeddings' in zero_shot.not_applicable(c)
  for key, value in (('train.target', 'cls'), ('train.normalize_target', True),
                     ('eval.encoder', '/some/export'), ('recipe', 'point_jepa')):
    d = smoke_config()
    block, leaf = key.rsplit('.', 1) if '.' in key else ('', key)
    (d[block] if block else d)[leaf] = value
    assert zero_shot.not_applicable(d) is None and not zero_shot.has_head(d), key


@pytest.fixture(scope='module')
def lite_run(tmp_path_factory):
  """The ImageNet Lite0 teacher, the object target, every synthetic class: one --mode=all run
  (prepare, pretrain, evaluate, benchmark, export). -> (config, workdir)."""
  tmp_path = tmp_path_factory.mktemp('lite_run')
  c = smoke_config(steps=4, checkpoint_every=4, log_every=1, warmup_steps=1, target='object')
  c.teacher.random_init = False
  c.teacher.feature_stage = 'stage5'
  d = c.data
  d.image_size = 32
  d.synthetic.num_classes = 0
  d.synthetic.train_per_class = 2        # the probe's CV needs two a class
  d.synthetic.test_per_class = 1
  d.synthetic.pretrain_per_class = 0
  d.synthetic.teacher_per_class = 0
  with pytest.raises(run_lib.UserError, match=r"no objects in split\(s\) \['pretrain'\]: leave them out "
                     r"of data.pretrain_splits \(now \['pretrain', 'train'\]"):
    run_lib.run(c, str(tmp_path / 'empty'), 'prepare')
  d.pretrain_splits = ('train',)
  c.eval.cv_folds = 2
  c.eval.fewshot_ways = (2,)
  c.eval.seeds = (0,)
  c.benchmark.enabled = True      # its seed 0 is this run: the same readouts, from its cache
  c.benchmark.seeds = (0,)
  c.benchmark.eval_sets = ('clean',)
  workdir = str(tmp_path / 'run')
  run_lib.run(c, workdir, 'all')
  assert not zero_shot._SHARED  # pylint: disable=protected-access  (released with the run)
  return c, workdir


def test_a_run_names_classes_through_the_teacher(lite_run, lite0):
  """results.json's zero-shot entry; the teacher's accuracy equals its own logits on the stored
  views; the benchmark's zero-shot column gives the same numbers for the same encoders."""
  c, workdir = lite_run
  with open(os.path.join(workdir, 'results.json')) as f:
    zs = json.load(f)['zero_shot']
  for entry in [zs['pretrained'], zs['object_head']] + zs['random_init']['per_seed']:
    assert entry['classes'] == 20 and entry['objects'] == 20 and entry['chance'] == 0.05
    assert 0.0 <= entry['accuracy'] <= 1.0
  assert zs['random_init']['seeds'] == [0] and zs['pretrained']['alpha'] in zero_shot.ZeroShot.ALPHAS
  assert zs['random_init']['accuracy'] == zs['random_init']['per_seed'][0]['accuracy']
  assert zs['classes']['mug'] == ['coffee mug'] and zs['split'] == 'test'
  arrays = pipeline.load_split(run_lib.resolve_teacher(c, workdir), workdir, 'test',
                               ['label', 'views/image'])
  images = arrays['views/image']
  logits = lite0(images.reshape((-1,) + images.shape[2:]))['logits']
  logits = logits.reshape(images.shape[:2] + (-1,)).mean(1)
  expected = zero_shot.accuracy(logits, arrays['label'], zero_shot.class_indices(synthetic.CLASS_NAMES))
  assert zs['teacher_on_views']['accuracy'] == pytest.approx(expected['accuracy'])
  with open(os.path.join(workdir, 'benchmark.json')) as f:
    rows = json.load(f)['table']['clean']
  assert rows['crossjepa']['zero_shot']['mean'] == pytest.approx(zs['pretrained']['accuracy'])
  assert rows['random_init']['zero_shot']['mean'] == pytest.approx(zs['random_init']['accuracy'])
  assert rows['teacher_2d']['zero_shot']['mean'] == pytest.approx(expected['accuracy'])
  table = run_lib.results_table(workdir)
  assert 'zero-shot, no 3D label (20 classes with an ImageNet name, 20 test objects, chance 5.0' in table


def test_the_export_carries_the_readout(lite_run, monkeypatch):
  """The export's affine map equals the ridge readout + the teacher's classifier (sklearn's own
  predict) on the run's encoders, and load_encoder(...).imagenet_logits gives results.json's
  zero-shot accuracy from the points alone."""
  c, workdir = lite_run
  export_dir = os.path.join(workdir, 'export')
  info = export_lib.read_info(export_dir)
  zinfo = info['zero_shot']
  assert zinfo['teacher']['architecture'] == 'efficientnet_lite'
  assert zinfo['fitted_on'] == {'source': 'synthetic', 'name': c.data.name, 'splits': ['train'],
                                'objects': 96}
  assert zinfo['random_init']['seeds'] == [0] and set(zinfo['alpha']) == {'pretrained', 'random_init_0'}
  arrays = zero_shot.load_readout(export_dir, info)
  cfg = run_lib.resolve_teacher(c, workdir)
  zs = zero_shot.ZeroShot(cfg, workdir)
  module, params, _, _ = protocol._encoder_under_test(cfg, workdir)  # pylint: disable=protected-access
  embed = features_lib.make_embed_fn(module, params)
  data = pipeline.load_split(cfg, workdir, 'test', list(zero_shot.ZeroShot.KEYS))
  init = next(protocol.random_init_params(module, data['points'], [0]))
  for name, fn in (('pretrained', embed), ('random_init_0', embed.with_params(init))):
    scaler, ridge = zs._fit(fn)  # pylint: disable=protected-access
    x = zero_shot.features(fn, data)
    reference = zs._logits(ridge.predict(scaler.transform(x)) * zs.target_std + zs.target_mean)  # pylint: disable=protected-access
    folded = x @ arrays[f'{name}_kernel'] + arrays[f'{name}_bias']
    np.testing.assert_allclose(folded, reference, rtol=1e-4, atol=1e-3 * np.abs(reference).max())
    assert zinfo['alpha'][name] == float(ridge.alpha_)
  with open(os.path.join(workdir, 'results.json')) as f:
    want = json.load(f)['zero_shot']['pretrained']['accuracy']
  # A pretraining source without a class table (a mesh folder's own classes) still exports the
  # readout: it reads no label, and the classes are mapped where the export is evaluated.
  monkeypatch.setitem(zero_shot.MAPPINGS, 'synthetic', {})
  with pytest.raises(zero_shot.NotApplicable, match="has an ImageNet mapping .*none for data.source='synthetic'"):
    zero_shot.ZeroShot(cfg, workdir)
  again, _ = zero_shot.export_readout(cfg, workdir, module, params, 'max+mean')
  np.testing.assert_array_equal(again['pretrained_kernel'], arrays['pretrained_kernel'])
  logits = export_lib.load_encoder(export_dir).imagenet_logits(data['points'])
  assert logits.shape == (len(data['points']), 1000)
  got = zero_shot.accuracy(logits, data['label'], zero_shot.class_indices(synthetic.CLASS_NAMES))
  assert got['accuracy'] == pytest.approx(want)


def test_stages_share_the_fitted_readouts(lite_run, monkeypatch):
  """evaluate, then the export's readout in the same process (--mode=all): the export fits
  nothing again, and its maps are a fresh process's bit for bit; records changed since are read
  again."""
  c, workdir = lite_run
  cfg = run_lib.resolve_teacher(c, workdir)
  module, params, _, _ = protocol._encoder_under_test(cfg, workdir)  # pylint: disable=protected-access
  embed = features_lib.make_embed_fn(module, params)
  fits, real = [], zero_shot.features

  def counting(fn, arrays, batch=64):
    if arrays is zero_shot._SHARED['state']['fit_data']:  # pylint: disable=protected-access
      fits.append(batch)
    return real(fn, arrays, batch)

  monkeypatch.setattr(zero_shot, 'features', counting)
  zero_shot._SHARED.clear()  # pylint: disable=protected-access
  zero_shot.evaluate(cfg, workdir, module, params, embed)
  assert len(fits) == 2                # the encoder and its random init (eval.seeds = (0,))
  shared, _ = zero_shot.export_readout(cfg, workdir, module, params, 'max+mean')
  assert len(fits) == 2
  zero_shot._SHARED.clear()  # pylint: disable=protected-access
  fresh, _ = zero_shot.export_readout(cfg, workdir, module, params, 'max+mean')
  assert len(fits) == 4 and sorted(fresh) == sorted(shared)
  for key, value in fresh.items():
    np.testing.assert_array_equal(shared[key], value)
  state = zero_shot._SHARED['state']  # pylint: disable=protected-access
  zero_shot.ZeroShot(cfg, workdir)
  assert zero_shot._SHARED['state'] is state  # pylint: disable=protected-access
  path = records.dataset_dir(cfg, workdir)
  touched = os.path.join(path, sorted(os.listdir(path))[0])
  st = os.stat(touched)
  try:
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    zero_shot.ZeroShot(cfg, workdir)
    assert zero_shot._SHARED['state'] is not state  # pylint: disable=protected-access
  finally:
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns))


def _modelnet40_config(c, export_dir, root):
  """configs/modelnet40.py:ply_hdf5_2048 on `root` as tests/test_benchmarks.py evaluates an
  export, with this export's geometry."""
  m = bench_config('modelnet40', 'ply_hdf5_2048', root, export_dir)
  d = m.data
  d.num_points, d.num_groups, d.group_size = c.data.num_points, c.data.num_groups, c.data.group_size
  return m


# ModelNet40 labels: airplane, bottle, chair (mapped) and cone (not).
MN40_TRAIN, MN40_TEST = [0, 5, 8, 9] * 2, [0, 5, 8, 9, 0, 5]


def test_an_eval_only_run_of_the_export_has_zero_shot(lite_run, tmp_path, monkeypatch):
  """ModelNet40 files (no teacher, no renders) evaluated with the export: the export's readout
  with ModelNet40's 30-class mapping; the pretrained and random-init accuracies equal the
  brute-force ones; a changed readout file, a mapping file and its mistakes."""
  c, workdir = lite_run
  export_dir = os.path.join(workdir, 'export')
  formats.write_modelnet40_h5(str(tmp_path / 'mn40'), {'train': MN40_TRAIN, 'test': MN40_TEST})
  monkeypatch.setattr(plots, 'plot_tsne', lambda *a, **k: None)
  m = _modelnet40_config(c, export_dir, tmp_path / 'mn40')
  run_lib.run(m, str(tmp_path / 'eval'), 'all')
  with open(tmp_path / 'eval' / 'results.json') as f:
    zs = json.load(f)['zero_shot']
  pre = zs['pretrained']
  assert pre['classes'] == 30 and pre['objects'] == 5 and pre['chance'] == pytest.approx(1 / 30)
  assert zs['classes']['airplane'] == ['airliner', 'warplane'] and 'cone' not in zs['classes']
  assert zs['readout']['fitted_on']['objects'] == 96 and zs['split'] == 'test'
  assert 'teacher_on_views' not in zs
  loaded = export_lib.load_encoder(export_dir)
  data = pipeline.load_split(m, str(tmp_path / 'eval'), 'test', ['points', 'label'])
  indices = zero_shot.class_indices(formats.MODELNET40, zero_shot.MODELNET40)
  assert pre['accuracy'] == pytest.approx(
      zero_shot.accuracy(loaded.imagenet_logits(data['points']), data['label'], indices)['accuracy'])
  arrays = zero_shot.load_readout(export_dir, loaded.info)
  init = next(protocol.random_init_params(loaded.module, data['points'], [0]))
  x = features_lib.make_embed_fn(loaded.module, init)(data['points'])
  rnd = zero_shot.accuracy(x @ arrays['random_init_0_kernel'] + arrays['random_init_0_bias'],
                           data['label'], indices)
  assert zs['random_init']['accuracy'] == pytest.approx(rnd['accuracy'])
  table = run_lib.results_table(str(tmp_path / 'eval'))
  assert "30 classes with an ImageNet name, 5 test objects, chance 3.3; the export's readout" in table

  # A mapping file of one's own: two classes.
  mapping = tmp_path / 'classes.json'
  mapping.write_text(json.dumps({'airplane': ['airliner'], 'chair': 'folding chair'}))
  m.eval.zero_shot_classes = str(mapping)
  run_lib.run(m, str(tmp_path / 'eval'), 'evaluate')
  with open(tmp_path / 'eval' / 'results.json') as f:
    zs = json.load(f)['zero_shot']
  assert zs['pretrained']['classes'] == 2 and zs['pretrained']['objects'] == 3
  assert zs['classes'] == {'airplane': ['airliner'], 'chair': ['folding chair']}
  for text, match in (
      ({'plane': ['airliner']}, r"names classes \['plane'\] that the records do not have"),
      ({'chair': ['armchair']}, r"'chair': 'armchair' is not an ImageNet class name"),
      ({'chair': []}, r"'chair' maps to \[\]; expected a non-empty list"),
      ([], 'expected a non-empty JSON object')):
    mapping.write_text(json.dumps(text))
    with pytest.raises(run_lib.UserError, match=match):
      run_lib.run(m, str(tmp_path / 'eval'), 'evaluate')
  mapping.write_text('{"chair": ')
  with pytest.raises(run_lib.UserError, match=r'classes.json is not valid JSON'):
    run_lib.run(m, str(tmp_path / 'eval'), 'evaluate')
  m.eval.zero_shot_classes = str(tmp_path / 'nope.json')
  with pytest.raises(run_lib.UserError, match=r'nope.json.*no such file'):
    run_lib.run(m, str(tmp_path / 'eval'), 'evaluate')
  m.eval.zero_shot_classes = ''

  # A readout file changed after export: refused, naming it.
  changed = tmp_path / 'export_copy'
  shutil.copytree(export_dir, changed)
  with np.load(changed / zero_shot.READOUT_FILE) as z:
    arrays = {k: z[k] for k in z.files}
  arrays['pretrained_bias'] = arrays['pretrained_bias'] + 1.0
  np.savez(changed / zero_shot.READOUT_FILE, **arrays)
  m.eval.encoder = str(changed)
  with pytest.raises(run_lib.UserError, match=r'zero_shot.npz: sha256 [0-9a-f]+ differs from'):
    run_lib.run(m, str(tmp_path / 'eval'), 'evaluate')
  with pytest.raises(ValueError, match=r'zero_shot.npz: sha256'):
    export_lib.load_encoder(str(changed)).imagenet_logits(data['points'])
  os.remove(changed / zero_shot.READOUT_FILE)
  with pytest.raises(run_lib.UserError, match=r'zero_shot.npz: missing; .*encoder.json lists it'):
    run_lib.run(m, str(tmp_path / 'eval'), 'evaluate')

  # Random-init params that differ from those the controls were fitted on (another JAX): the
  # control is reported as skipped, with why; the pretrained number stands.
  other = tmp_path / 'export_other'
  shutil.copytree(export_dir, other)
  info = json.loads((other / 'encoder.json').read_text())
  info['zero_shot']['random_init']['param_checksums']['0'] = '0' * 64
  (other / 'encoder.json').write_text(json.dumps(info))
  m.eval.encoder = str(other)
  run_lib.run(m, str(tmp_path / 'eval'), 'evaluate')
  with open(tmp_path / 'eval' / 'results.json') as f:
    zs = json.load(f)['zero_shot']
  assert zs['pretrained']['accuracy'] == pre['accuracy']
  assert zs['random_init'] == {'skipped': 'the random-init params of seeds [0] differ from those '
                                          'the export\'s control readouts were fitted on (another '
                                          'JAX version or platform?)'}
  assert 'random init: the random-init params of seeds [0] differ' in run_lib.results_table(
      str(tmp_path / 'eval'))


def _classify_cli(*args):
  return subprocess.run([sys.executable, '-m', 'crossjepa.classify', *args], capture_output=True,
                        text=True, timeout=300, check=False)


def test_classify_names_objects_from_files(lite_run, tmp_path, monkeypatch):
  """crossjepa.classify on point and mesh files: the points prepare would make (FPS of the
  normalised cloud; a mesh's seeded surface samples), the export's logits ranked, the 3D classes
  of a --classes file decided as the evaluation decides them; its mistakes exit 2 in one line."""
  c, workdir = lite_run
  export_dir = os.path.join(workdir, 'export')
  data = pipeline.load_split(run_lib.resolve_teacher(c, workdir), workdir, 'test',
                             ['points', 'label'])
  rng = np.random.default_rng(0)
  cloud = data['points'][0] * 3.0 + 1.0 + rng.normal(0, 1e-3, data['points'][0].shape)
  np.save(tmp_path / 'a.npy', np.concatenate([cloud, np.zeros((len(cloud), 3))], axis=1))
  np.savetxt(tmp_path / 'a.txt', cloud, delimiter=',')
  mesh_index = synthetic.CLASS_NAMES.index('mug')
  mesh = synthetic.make_shape(mesh_index, np.random.default_rng(7))
  with open(tmp_path / 'mug.obj', 'w') as f:
    f.writelines(f'v {x} {y} {z}\n' for x, y, z in mesh.vertices)
    f.writelines(f'f {a + 1} {b + 1} {c + 1}\n' for a, b, c in mesh.faces)
  paths = [str(tmp_path / n) for n in ('a.npy', 'a.txt', 'mug.obj')]
  out = classify.classify(export_dir, paths, top=4)
  loaded = export_lib.load_encoder(export_dir)
  normalised = meshes.normalize_unit_sphere(cloud)[0]
  want = normalised[sampling.farthest_point_sampling_np(normalised, c.data.num_points)]
  np.testing.assert_allclose(classify.object_points(paths[0], c.data.num_points), want, atol=1e-5)
  np.testing.assert_array_equal(classify.object_points(paths[2], c.data.num_points),
                                classify.object_points(paths[2], c.data.num_points))  # seeded
  logits = loaded.imagenet_logits(want[None])[0]
  names = zero_shot.imagenet_class_names()
  assert [r['name'] for r in out[0]['classes']] == [
      names[i].split(',')[0] for i in np.argsort(-logits)[:4]]
  probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
  assert out[0]['classes'][0]['probability'] == pytest.approx(probs.max(), rel=1e-4)
  assert [r['name'] for r in out[1]['classes']] == [r['name'] for r in out[0]['classes']]
  assert len(out[2]['classes']) == 4 and out[2]['input'] == paths[2]

  # --classes: every 3D class ranked as the evaluation decides (zero_shot.predict).
  mapping = {k: list(v) for k, v in zero_shot.IMAGENET_NAMES.items()}
  (tmp_path / 'classes.json').write_text(json.dumps(mapping))
  ranked = classify.classify(export_dir, paths, top=100, classes=str(tmp_path / 'classes.json'))
  indices = zero_shot.class_indices(list(mapping), mapping)
  points = np.stack([classify.object_points(p, c.data.num_points) for p in paths])
  decided = zero_shot.predict(loaded.imagenet_logits(points), indices)
  for r, d in zip(ranked, decided):
    assert len(r['classes']) == 20 and r['classes'][0]['name'] == list(mapping)[d]
    assert sum(x['probability'] for x in r['classes']) == pytest.approx(1.0)

  # a folder stands for its files; an empty one is refused
  (tmp_path / 'some').mkdir()
  shutil.copy(paths[2], tmp_path / 'some' / 'mug.obj')
  shutil.copy(paths[0], tmp_path / 'some' / 'a.npy')
  (tmp_path / 'some' / 'notes.md').write_text('not a shape')
  folder = classify.classify(export_dir, [str(tmp_path / 'some')], top=4)
  assert [r['input'] for r in folder] == [str(tmp_path / 'some' / n) for n in ('a.npy', 'mug.obj')]
  assert [r['classes'] for r in folder] == [out[0]['classes'], out[2]['classes']]
  (tmp_path / 'empty').mkdir()
  with pytest.raises(ValueError, match=r'empty: a folder with no mesh'):
    classify.classify(export_dir, [str(tmp_path / 'empty')])

  # many files: a chunk at a time, the same answers
  monkeypatch.setattr(classify, 'CHUNK', 2)
  chunked = classify.classify(export_dir, paths + paths[:2], top=4)
  for got, want in zip(chunked, out + out[:2]):
    assert [x['name'] for x in got['classes']] == [x['name'] for x in want['classes']]
    np.testing.assert_allclose([x['logit'] for x in got['classes']],
                               [x['logit'] for x in want['classes']], rtol=1e-5, atol=1e-4)
  monkeypatch.undo()

  # a source's table by name
  preset = classify.classify(export_dir, paths[:1], top=2, classes='modelnet40')
  assert len(preset[0]['classes']) == 2
  assert {x['name'] for x in preset[0]['classes']} <= set(zero_shot.MODELNET40)
  sn55 = classify.classify(export_dir, paths[:1], top=50, classes='shapenet55')
  assert 'chair (03001627)' in {x['name'] for x in sn55[0]['classes']}

  # the command line: JSON, and one line with exit 2 for a user's mistake
  done = _classify_cli(f'--encoder={export_dir}', f'--input={paths[0]},{paths[2]}', '--top=2',
                       '--json')
  assert done.returncode == 0, done.stderr
  assert [[x['name'] for x in r['classes']] for r in json.loads(done.stdout)] == [
      [x['name'] for x in r['classes'][:2]] for r in (out[0], out[2])]
  bad = cloud.copy()
  bad[5, 1] = np.nan
  np.save(tmp_path / 'nan.npy', bad)
  done = _classify_cli(f'--encoder={export_dir}', f'--input={tmp_path / "nan.npy"}')
  assert done.returncode == 2 and done.stdout == ''
  assert done.stderr.strip().splitlines() == [
      f'crossjepa.classify: error: {tmp_path / "nan.npy"}: 1 of {len(cloud)} points are not '
      'finite (NaN or Inf), the first at row 5']
  for name, content, match in (
      ('b.ply2', 'x', r"b.ply2: unknown extension '.ply2'"),
      ('b.txt', '1 2\n3 4\n', r'b.txt: expected points \[M, >=3\] with M > 0'),
      ('b.xyz', '1 2 x\n', r'b.xyz: expected rows of numbers'),
      ('b.npy', None, r'b.npy: not a numeric .npy array'),
      ('same.pts', '1 1 1\n1 1 1\n', r'same.pts: normalize_unit_sphere: all points coincide')):
    path = tmp_path / name
    if content is None:
      np.save(path, np.array([{'a': 1}], dtype=object), allow_pickle=True)
    else:
      path.write_text(content)
    with pytest.raises(ValueError, match=match):
      classify.classify(export_dir, [str(path)])
  with pytest.raises(FileNotFoundError, match=r'gone.npy: no such file'):
    classify.classify(export_dir, [str(tmp_path / 'gone.npy')])
  (tmp_path / 'bad.json').write_text(json.dumps({'mug': ['tea mug']}))
  with pytest.raises(ValueError, match=r"--classes=.*bad.json: zero-shot mapping 'mug': 'tea mug' "
                     'is not an ImageNet class name'):
    classify.classify(export_dir, paths[:1], classes=str(tmp_path / 'bad.json'))
  with pytest.raises(FileNotFoundError, match=r"--classes='.*nope.json': no such file"):
    classify.classify(export_dir, paths[:1], classes=str(tmp_path / 'nope.json'))
  bare = tmp_path / 'bare_export'
  shutil.copytree(export_dir, bare)
  info = json.loads((bare / 'encoder.json').read_text())
  del info['zero_shot']
  (bare / 'encoder.json').write_text(json.dumps(info))
  os.remove(bare / zero_shot.READOUT_FILE)
  with pytest.raises(ValueError, match=r'no zero-shot readout \(it was exported by a crossjepa '
                     'version without one\)'):
    classify.classify(str(bare), paths[:1])
