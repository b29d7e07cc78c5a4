"""CLIP's text tower: parity with Hugging Face CLIPModel's text features through convert_clip ->
teacher folder -> load_text (tokenizer included), the open_clip layout and open_clip's vocabulary
file, what the conversion refuses; then zero-shot classes named in words: a whole run's results,
its export, an evaluation of that export and crossjepa.classify, against a brute-force
recomputation from Hugging Face's own text features."""
import copy
import json
import os

import numpy as np
import pytest

import formats  # pylint: disable=g-bad-import-order
from crossjepa import classify
from crossjepa import config_util
from crossjepa import run as run_lib
from crossjepa.data import pipeline
from crossjepa.data import synthetic
from crossjepa.evaluation import export as export_lib
from crossjepa.evaluation import features as features_lib
from crossjepa.evaluation import plots
from crossjepa.evaluation import protocol
from crossjepa.evaluation import zero_shot
from crossjepa.weights import errors
from crossjepa.weights import teacher_conversion
from crossjepa.weights import teacher_io
from tests.test_benchmarks import bench_config
from tests.test_clip_tokenizer import CORPUS, clip_vocab, learn_bpe, write_gz, write_hf
from tests.test_step import smoke_config

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

PATCH, SIZE, PROJ = 8, 32, 16
TEMPLATES = ('a point cloud of a {}.', '{}')     # prompts of one's own (eval.zero_shot_templates)
WORDS = sorted({zero_shot.class_words('synthetic', n) for n in synthetic.CLASS_NAMES})
PROMPTS = ['a photo of a chair.', 'a rendering of the night stand.', 'A 3D model of a MUG!',
           'tripod stool', '']


def _vocabulary():
  merges = learn_bpe(CORPUS + ' ' + ' '.join(WORDS), 300)
  return clip_vocab(merges), merges


def _clip(vocab_size, seed, text_mlp=96):
  """A random tiny CLIPModel (norms and embeddings away from their init), eot = the last id; two
  64-wide heads in each tower (CLIP's head width, what a bare open_clip file is read with)."""
  torch.manual_seed(seed)
  text = transformers.CLIPTextConfig(
      vocab_size=vocab_size, hidden_size=128, intermediate_size=text_mlp, num_hidden_layers=2,
      num_attention_heads=2, max_position_embeddings=77, hidden_act='quick_gelu',
      bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)
  vision = transformers.CLIPVisionConfig(
      hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
      image_size=SIZE, patch_size=PATCH, hidden_act='quick_gelu')
  model = transformers.CLIPModel(transformers.CLIPConfig(
      text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=PROJ)).eval()
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if 'norm' in name:
        p.add_(0.3 * torch.randn(p.shape, generator=gen))
      elif 'embedding' in name:
        p.normal_(0.0, 0.5, generator=gen)
  return model


def _hf_text(model, folder, texts):
  """Hugging Face's text features, tokenised by its own CLIPTokenizer from the folder's files."""
  tok = transformers.CLIPTokenizer.from_pretrained(folder)
  ids = tok(list(texts), padding=True, return_tensors='pt')
  with torch.no_grad():
    out = model.get_text_features(input_ids=ids['input_ids'], attention_mask=ids['attention_mask'])
  return getattr(out, 'pooler_output', out).numpy()


@pytest.fixture(scope='module')
def clip_folder(tmp_path_factory):
  """(HF CLIPModel, its folder with vocab.json + merges.txt, the converted teacher folder)."""
  vocab, merges = _vocabulary()
  root = tmp_path_factory.mktemp('clip_text')
  folder = str(root / 'hf')
  model = _clip(len(vocab), seed=0)
  model.save_pretrained(folder)
  write_hf(folder, vocab, merges)
  write_gz(str(root / 'bpe_simple_vocab_16e6.txt.gz'), merges)
  out = str(root / 'teacher')
  spec = teacher_conversion.convert_clip('hf_clip', folder, out)
  assert spec.extra['text']['embedding_dim'] == PROJ and 'text_left_out' not in spec.extra
  return model, folder, out


def test_text_features_equal_hugging_faces(clip_folder):
  """Tokenizer + text tower against CLIPModel.get_text_features on CLIPTokenizer's ids, padded:
  the ids' end-of-text token and the causal mask make the padding irrelevant."""
  model, folder, out = clip_folder
  encoder = teacher_io.load_text(out)
  assert encoder.module.mlp_dim == 96 and encoder.module.act == 'quick_gelu'
  got, want = encoder(PROMPTS), _hf_text(model, folder, PROMPTS)
  assert got.shape == (len(PROMPTS), PROJ)
  np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=0)
  # one text alone (a batch padded with copies of it) gives the same embedding
  np.testing.assert_allclose(encoder(PROMPTS[1:2])[0], got[1], atol=1e-6, rtol=0)


def _open_clip_state_dict(model):
  """The same weights in open_clip's CLIP layout (fused in_proj, c_fc / c_proj, [D, E] matrices)."""
  sd = {k: v.numpy() for k, v in model.state_dict().items()}
  out = {'logit_scale': sd['logit_scale']}

  def blocks(src, dst, depth):
    for i in range(depth):
      s, d = f'{src}.encoder.layers.{i}.', f'{dst}transformer.resblocks.{i}.'
      out[d + 'attn.in_proj_weight'] = np.concatenate(
          [sd[s + f'self_attn.{n}_proj.weight'] for n in 'qkv'])
      out[d + 'attn.in_proj_bias'] = np.concatenate([sd[s + f'self_attn.{n}_proj.bias'] for n in 'qkv'])
      for a, b in (('self_attn.out_proj', 'attn.out_proj'), ('layer_norm1', 'ln_1'),
                   ('layer_norm2', 'ln_2'), ('mlp.fc1', 'mlp.c_fc'), ('mlp.fc2', 'mlp.c_proj')):
        out[d + b + '.weight'], out[d + b + '.bias'] = sd[s + a + '.weight'], sd[s + a + '.bias']

  v = 'vision_model'
  out.update({'visual.class_embedding': sd[f'{v}.embeddings.class_embedding'],
              'visual.positional_embedding': sd[f'{v}.embeddings.position_embedding.weight'],
              'visual.conv1.weight': sd[f'{v}.embeddings.patch_embedding.weight'],
              'visual.proj': sd['visual_projection.weight'].T})
  for a, b in (('pre_layrnorm', 'ln_pre'), ('post_layernorm', 'ln_post')):
    out[f'visual.{b}.weight'], out[f'visual.{b}.bias'] = sd[f'{v}.{a}.weight'], sd[f'{v}.{a}.bias']
  blocks(v, 'visual.', 2)
  t = 'text_model'
  out.update({'token_embedding.weight': sd[f'{t}.embeddings.token_embedding.weight'],
              'positional_embedding': sd[f'{t}.embeddings.position_embedding.weight'],
              'ln_final.weight': sd[f'{t}.final_layer_norm.weight'],
              'ln_final.bias': sd[f'{t}.final_layer_norm.bias'],
              'text_projection': sd['text_projection.weight'].T})
  blocks(t, '', 2)
  return out


def test_open_clip_layout_and_vocabulary_file(clip_folder, tmp_path):
  """The same model as an open_clip file, its vocabulary as open_clip's bpe_simple_vocab .txt.gz:
  the same text embeddings and image embedding as the HF folder's conversion."""
  safetensors_torch = pytest.importorskip('safetensors.numpy')
  model, folder, out = clip_folder
  path = str(tmp_path / 'open_clip.safetensors')
  safetensors_torch.save_file({k: np.ascontiguousarray(v) for k, v in
                               _open_clip_state_dict(model).items()}, path)
  gz = os.path.join(os.path.dirname(folder), 'bpe_simple_vocab_16e6.txt.gz')
  other = str(tmp_path / 'teacher')
  spec = teacher_conversion.convert_clip('open_clip', path, other, activation='quick_gelu',
                                         tokenizer_path=gz)
  assert spec.extra['text']['source'] == 'open_clip'
  np.testing.assert_allclose(teacher_io.load_text(other)(PROMPTS),
                             teacher_io.load_text(out)(PROMPTS), atol=1e-6, rtol=0)
  images = np.random.default_rng(0).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
  np.testing.assert_allclose(teacher_io.load_teacher(other)(images)['global'],
                             teacher_io.load_teacher(out)(images)['global'], atol=1e-5, rtol=0)


def test_what_the_conversion_refuses_or_leaves_out(clip_folder, tmp_path):
  model, folder, out = clip_folder
  # no vocabulary beside the weights: the image tower alone, and the folder says why
  bare = str(tmp_path / 'bare')
  model.save_pretrained(bare)
  spec = teacher_conversion.convert_clip('hf_clip', bare, str(tmp_path / 't1'))
  assert 'no vocabulary' in spec.extra['text_left_out'] and 'text' not in spec.extra
  assert not teacher_io.has_text(str(tmp_path / 't1'))
  with pytest.raises(FileNotFoundError, match='has no text tower'):
    teacher_io.load_text(str(tmp_path / 't1'))
  # a --tokenizer that is not there; a vocabulary of another size than the token embedding
  with pytest.raises(errors.ConvertError, match=r'--tokenizer: .*missing'):
    teacher_conversion.convert_clip('hf_clip', bare, str(tmp_path / 't2'),
                                    tokenizer_path=str(tmp_path / 'missing'))
  small = write_hf(str(tmp_path / 'small'), *_small_vocabulary())
  with pytest.raises(errors.ConvertError, match=r'tokens, but the text tower of .* embeds'):
    teacher_conversion.convert_clip('hf_clip', bare, str(tmp_path / 't2'), tokenizer_path=small)
  assert not (tmp_path / 't2').exists()
  # a text tower converted with another teacher's: refused, naming text.json
  damaged = str(tmp_path / 'damaged')
  teacher_conversion.convert_clip('hf_clip', folder, damaged)
  path = os.path.join(damaged, 'text', 'text.json')
  with open(path) as f:
    info = json.load(f)
  info['param_checksum'] = '0' * 64
  with open(path, 'w') as f:
    json.dump(info, f)
  with pytest.raises(ValueError, match=r'text.json: param_checksum 0000000000000000 differs'):
    teacher_io.load_text(damaged)


def _small_vocabulary():
  merges = learn_bpe(CORPUS, 20)
  return clip_vocab(merges), merges


# ------------------------------------------------------------------------------ zero-shot in words


@pytest.fixture(scope='module')
def clip_run(clip_folder, tmp_path_factory):
  """A --mode=all run (prepare, pretrain, evaluate, export) with the tiny CLIP teacher."""
  _, _, teacher = clip_folder
  c = smoke_config(steps=4, checkpoint_every=4, log_every=1, warmup_steps=1, target='object')
  c.teacher.random_init = False
  c.teacher.checkpoint = teacher
  c.teacher.feature_stage = ''
  d = c.data
  d.image_size = SIZE
  d.synthetic.num_classes = 0
  d.synthetic.train_per_class = 2
  d.synthetic.test_per_class = 1
  d.synthetic.pretrain_per_class = 0
  d.synthetic.teacher_per_class = 0
  d.pretrain_splits = ('train',)
  c.eval.cv_folds = 2
  c.eval.fewshot_ways = (2,)
  c.eval.seeds = (0,)
  workdir = str(tmp_path_factory.mktemp('clip_run') / 'run')
  run_lib.run(c, workdir, 'all')
  return c, workdir


def _reference_kernel(model, folder, words, templates=zero_shot.TEMPLATES):
  """[E, K] from Hugging Face's text features: each word in the templates, normalised,
  averaged, normalised."""
  prompts = [t.format(w) for w in words for t in templates]
  emb = _hf_text(model, folder, prompts).astype(np.float64)
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  mean = emb.reshape(len(words), len(templates), -1).mean(1)
  return (mean / np.linalg.norm(mean, axis=1, keepdims=True)).T


def test_a_run_names_its_classes_in_words(clip_run, clip_folder):
  """results.json: every class named by its words; the accuracies equal a recomputation with
  Hugging Face's text features (the readout's own predictions, the teacher's view embeddings)."""
  model, folder, _ = clip_folder
  c, workdir = clip_run
  with open(os.path.join(workdir, 'results.json')) as f:
    zs = json.load(f)['zero_shot']
  n = len(synthetic.CLASS_NAMES)
  assert zs['classifier'] == 'clip_text' and zs['templates'] == list(zero_shot.TEMPLATES)
  assert zs['pretrained']['classes'] == n and zs['pretrained']['objects'] == n
  assert zs['classes']['square_table'] == ['square table']
  cfg = run_lib.resolve_teacher(c, workdir)
  evaluator = zero_shot.ZeroShot(cfg, workdir)
  words = [zero_shot.class_words('synthetic', name) for name in evaluator.class_names]
  kernel = _reference_kernel(model, folder, words)
  np.testing.assert_allclose(evaluator.kernel, kernel, atol=2e-4, rtol=0)
  data = pipeline.load_split(cfg, workdir, 'test', list(zero_shot.ZeroShot.KEYS) + ['teacher/cls'])
  module, params, _, _ = protocol._encoder_under_test(cfg, workdir)  # pylint: disable=protected-access
  scaler, ridge = evaluator._fit(features_lib.make_embed_fn(module, params))  # pylint: disable=protected-access
  pred = ridge.predict(scaler.transform(zero_shot.features(features_lib.make_embed_fn(
      module, params), data))) * evaluator.target_std + evaluator.target_mean
  labels, views = np.asarray(data['label']), np.asarray(data['teacher/cls'], np.float64).mean(1)
  for name, emb in (('pretrained', pred), ('teacher_on_views', views)):
    want = np.argmax(emb @ kernel, 1)        # the labels are the kernel's columns, in order
    np.testing.assert_array_equal(zero_shot.predict(evaluator._logits(emb), evaluator.indices),  # pylint: disable=protected-access
                                  want)
    assert zs[name]['accuracy'] == pytest.approx(np.mean(want == labels)), name
  # (a random tiny CLIP gives every object one class; a class's own text embedding names it)
  np.testing.assert_array_equal(zero_shot.predict(evaluator._logits(kernel.T), evaluator.indices),  # pylint: disable=protected-access
                                np.arange(n))
  table = run_lib.results_table(workdir)
  assert f'zero-shot, no 3D label ({n} classes named in words' in table


def test_the_export_names_words(clip_run, tmp_path):
  """The export carries the map into CLIP's embedding and the words' text embeddings: its
  text_logits, an evaluation of the export and classify agree with the run's results."""
  c, workdir = clip_run
  export_dir = os.path.join(workdir, 'export')
  info = export_lib.read_info(export_dir)
  zinfo = info['zero_shot']
  assert zinfo['classifier'] == 'clip_text' and zinfo['text']['dim'] == PROJ
  assert {'square table', 'night stand', 'airplane', 'trash bin'} <= set(zinfo['text']['words'])
  with open(os.path.join(workdir, 'results.json')) as f:
    want = json.load(f)['zero_shot']['pretrained']['accuracy']
  cfg = run_lib.resolve_teacher(c, workdir)
  data = pipeline.load_split(cfg, workdir, 'test', list(zero_shot.ZeroShot.KEYS))
  encoder = export_lib.load_encoder(export_dir)
  names = zero_shot.ZeroShot(cfg, workdir).class_names
  evaluator = zero_shot.ZeroShot(cfg, workdir)
  logits = encoder.text_logits(data['points'], [zero_shot.class_words('synthetic', n) for n in names])
  # the ridge readout of the run (sklearn's predict) into CLIP's embedding, 100 x the cosine
  module, params, _, _ = protocol._encoder_under_test(cfg, workdir)  # pylint: disable=protected-access
  embed = features_lib.make_embed_fn(module, params)
  scaler, ridge = evaluator._fit(embed)  # pylint: disable=protected-access
  emb = ridge.predict(scaler.transform(zero_shot.features(embed, data))) * evaluator.target_std \
      + evaluator.target_mean
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  np.testing.assert_allclose(logits, 100.0 * emb @ evaluator.kernel, atol=1e-3, rtol=0)
  assert np.mean(np.argmax(logits, 1) == data['label']) == pytest.approx(want)
  with pytest.raises(ValueError, match="readout is into a CLIP teacher's embedding"):
    encoder.imagenet_logits(data['points'])
  with pytest.raises(ValueError, match=r"not of \['teapot'\]"):
    encoder.text_logits(data['points'][:2], ['chair', 'teapot'])
  again = zero_shot.evaluate_export(cfg, workdir, export_dir, info, module, params)
  assert again['pretrained']['accuracy'] == pytest.approx(want)
  assert again['classifier'] == 'clip_text' and again['pretrained']['classes'] == len(names)
  # classify: a file of the test split's points, by the export's words or by a source's classes
  path = str(tmp_path / 'object.npy')
  np.save(path, np.asarray(data['points'][0]))
  top = classify.classify(export_dir, [path], top=3)[0]['classes']
  assert len(top) == 3 and {t['name'] for t in top} <= set(zinfo['text']['words'])
  assert top[0]['logit'] >= top[1]['logit'] >= top[2]['logit']
  ranked = classify.classify(export_dir, [path], top=48, classes='synthetic')[0]['classes']
  assert sorted(r['name'] for r in ranked) == sorted(synthetic.CLASS_NAMES)
  assert sum(r['probability'] for r in ranked) == pytest.approx(1.0)
  (tmp_path / 'classes.json').write_text(json.dumps({'pot': ['teapot', 'pitcher'], 'cup': 'cup'}))
  with pytest.raises(ValueError, match=r"--classes=.*classes.json: .*not of \['teapot'\]: give its "
                     r"teacher's text tower"):
    classify.classify(export_dir, [path], classes=str(tmp_path / 'classes.json'))
  # words it does not carry: through the teacher's text tower, checked by its checksum
  teacher = str(cfg.teacher.checkpoint)
  got = classify.classify(export_dir, [path], classes=str(tmp_path / 'classes.json'),
                          text_tower=teacher)[0]['classes']
  tower = teacher_io.load_text(teacher)
  words = zero_shot.word_columns(tower, ['teapot', 'pitcher', 'cup'])
  pot = words[:, 0] + words[:, 1]
  kernel = np.stack([pot / np.linalg.norm(pot), words[:, 2]], 1)
  fresh = export_lib.load_encoder(export_dir)
  emb = fresh.text_logits(data['points'][:1], ['cup'])     # (the export's own word)
  want = 100.0 * _embedding(fresh, data['points'][:1]) @ kernel
  assert {g['name']: g['logit'] for g in got} == pytest.approx(
      {'pot': float(want[0, 0]), 'cup': float(want[0, 1])}, abs=1e-3)
  assert emb.shape == (1, 1)
  tower.param_checksum = 'f' * 64
  with pytest.raises(ValueError, match=r'the text tower given \(checksum ffffffffffffffff\) is not '
                     r'the one of the teacher'):
    fresh.text_logits(data['points'][:1], ['teapot'], tower)
  with pytest.raises(ValueError, match='--text_tower=.*missing: .*has no text tower|--text_tower=.*'
                     'missing: teacher folder not found'):
    classify.classify(export_dir, [path], classes=str(tmp_path / 'classes.json'),
                      text_tower=str(tmp_path / 'missing'))


def _embedding(encoder, points):
  """A CLIP export's readout into the teacher's embedding, normalised."""
  arrays = encoder._readout_arrays()  # pylint: disable=protected-access
  emb = encoder(points) @ arrays['pretrained_kernel'] + arrays['pretrained_bias']
  return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def test_a_class_file_names_classes_in_free_text(clip_run, clip_folder, tmp_path):
  """eval.zero_shot_classes with a CLIP teacher: words, not ImageNet names; a class of several
  words gets their columns averaged; only the file's classes are named."""
  model, folder, _ = clip_folder
  c, workdir = clip_run
  cfg = copy.deepcopy(run_lib.resolve_teacher(c, workdir))
  path = tmp_path / 'classes.json'
  path.write_text(json.dumps({'mug': ['coffee mug', 'tea cup'], 'chair': 'office chair'}))
  cfg.eval.zero_shot_classes = str(path)
  assert zero_shot.check_class_file(cfg) == {'mug': ('coffee mug', 'tea cup'),
                                             'chair': ('office chair',)}
  evaluator = zero_shot.ZeroShot(cfg, workdir)
  chair, mug = evaluator.class_names.index('chair'), evaluator.class_names.index('mug')
  assert chair < mug and evaluator.indices == {chair: [0], mug: [1]}
  ref = _reference_kernel(model, folder, ['office chair', 'coffee mug', 'tea cup'])
  both = ref[:, 1] + ref[:, 2]
  np.testing.assert_allclose(evaluator.kernel, np.stack([ref[:, 0], both / np.linalg.norm(both)], 1),
                             atol=2e-4, rtol=0)
  assert evaluator.describe()['classes'] == {'chair': ['office chair'], 'mug': ['coffee mug', 'tea cup']}
  # prompts of one's own (eval.zero_shot_templates): the same words in them; the default's
  # columns, shared by the run's evaluators, are not taken for them
  cfg.eval.zero_shot_templates = ('a point cloud of a {}.', '{}')
  zero_shot.check_text_options(cfg)
  mine = zero_shot.ZeroShot(cfg, workdir)
  ref = _reference_kernel(model, folder, ['office chair', 'coffee mug', 'tea cup'], TEMPLATES)
  both = ref[:, 1] + ref[:, 2]
  np.testing.assert_allclose(mine.kernel, np.stack([ref[:, 0], both / np.linalg.norm(both)], 1),
                             atol=2e-4, rtol=0)
  assert np.abs(mine.kernel - evaluator.kernel).max() > 1e-2
  assert mine.describe()['templates'] == list(TEMPLATES)
  module, params, _, _ = protocol._encoder_under_test(cfg, workdir)  # pylint: disable=protected-access
  arrays, info = zero_shot.export_readout(cfg, workdir, module, params, str(cfg.eval.pooling))
  assert info['text']['templates'] == list(TEMPLATES)       # what the export's words are in
  chair = info['text']['words'].index('chair')
  np.testing.assert_allclose(arrays['text_kernel'][:, chair],
                             _reference_kernel(model, folder, ['chair'], TEMPLATES)[:, 0],
                             atol=2e-4, rtol=0)
  cfg.eval.zero_shot_templates = ()
  cfg.eval.encoder = os.path.join(workdir, 'export')     # an export embeds no new words
  with pytest.raises(ValueError, match=r"carries the text embeddings of \d+ words .*not of "
                     r"\['coffee mug', 'tea cup'\]"):
    zero_shot.check_class_file(cfg)
  path.write_text(json.dumps({'mug': ['mug', 'cup'], 'chair': 'office chair'}))
  assert zero_shot.check_class_file(cfg) == {'mug': ('mug', 'cup'), 'chair': ('office chair',)}
  cfg.eval.encoder = ''
  path.write_text(json.dumps({'mug': ['coffee mug', 'tea cup'], 'chair': 'office chair'}))
  cfg.teacher.checkpoint = ''      # no text tower: the names must be ImageNet's
  with pytest.raises(ValueError, match="'tea cup' is not an ImageNet class name"):
    zero_shot.check_class_file(cfg)
  cfg.eval.zero_shot_templates = TEMPLATES     # and prompts have no tower to go through
  with pytest.raises(ValueError, match=r"eval.zero_shot_templates = \['a point cloud of a \{\}.', "
                     r"'\{\}'\]: prompts for a CLIP teacher's text tower, but the teacher "
                     r"\(efficientnet_lite\) has none"):
    zero_shot.check_text_options(cfg)


def test_an_eval_only_run_embeds_words_the_export_lacks(clip_run, clip_folder, tmp_path,
                                                        monkeypatch):
  """eval.text_tower: an eval-only run of the CLIP export on ModelNet40 files, its classes named
  by words the export carries no text embedding of, takes them from the teacher's text tower
  (checked by its checksum, before the first stage); the accuracy equals Hugging Face's text
  features through the export's readout. Without it, or with another tower, exit 2 up front."""
  model, folder, teacher = clip_folder
  c, workdir = clip_run
  export_dir = os.path.join(workdir, 'export')
  formats.write_modelnet40_h5(str(tmp_path / 'mn40'), {'train': [0, 5, 8] * 2,
                                                        'test': [0, 5, 8, 0, 5, 8]})
  monkeypatch.setattr(plots, 'plot_tsne', lambda *a, **k: None)
  m = bench_config('modelnet40', 'ply_hdf5_2048', tmp_path / 'mn40', export_dir)
  m.data.num_points, m.data.num_groups, m.data.group_size = (
      c.data.num_points, c.data.num_groups, c.data.group_size)
  classes = {'airplane': ['jet plane'], 'bottle': 'flask', 'chair': ['recliner', 'chair']}
  (tmp_path / 'classes.json').write_text(json.dumps(classes))
  m.eval.zero_shot_classes = str(tmp_path / 'classes.json')
  evaldir = str(tmp_path / 'eval')
  with pytest.raises(run_lib.UserError, match=r"not of \['flask', 'jet plane', 'recliner'\]; use "
                     r"those words, or give its teacher's text tower \(eval.text_tower=DIR\)"):
    run_lib.run(m, evaldir, 'all')
  assert not os.path.exists(os.path.join(evaldir, 'data'))
  m.eval.text_tower = teacher
  loads = []
  monkeypatch.setattr(teacher_io, 'load_text', lambda path, f=teacher_io.load_text: (
      loads.append(path), f(path))[1])
  run_lib.run(m, evaldir, 'all')
  assert loads == [teacher]      # checked before the first stage, used by the evaluation: once
  monkeypatch.undo()
  monkeypatch.setattr(plots, 'plot_tsne', lambda *a, **k: None)
  with open(os.path.join(evaldir, 'results.json')) as f:
    zs = json.load(f)['zero_shot']
  assert zs['classifier'] == 'clip_text' and zs['pretrained']['classes'] == 3
  assert zs['text_tower'] == {'folder': os.path.abspath(teacher),
                              'words': ['flask', 'jet plane', 'recliner']}
  assert zs['classes'] == {'airplane': ['jet plane'], 'bottle': ['flask'],
                           'chair': ['recliner', 'chair']}
  data = pipeline.load_split(m, evaldir, 'test', ['points', 'label'])
  ref = _reference_kernel(model, folder, ['jet plane', 'flask', 'recliner', 'chair'])
  chair = ref[:, 2] + ref[:, 3]
  kernel = np.stack([ref[:, 0], ref[:, 1], chair / np.linalg.norm(chair)], 1)
  emb = _embedding(export_lib.load_encoder(export_dir), data['points'])
  want = np.array([0, 5, 8])[np.argmax(emb @ kernel, 1)]      # ModelNet40 labels, in order
  assert zs['pretrained']['accuracy'] == pytest.approx(np.mean(want == data['label']))
  assert zs['pretrained']['objects'] == 6
  assert ("3 classes named in words, 6 test objects, chance 33.3; the export's readout into its "
          "teacher's embedding, the cosine with CLIP's text embeddings (3 words by "
          "eval.text_tower)") in run_lib.results_table(evaldir)
  # prompts other than the export's: every word through the tower, in them; without it, refused
  m.eval.zero_shot_templates = TEMPLATES
  m.eval.text_tower = ''
  with pytest.raises(run_lib.UserError, match=r"eval.zero_shot_templates = .* are not the prompts "
                     r"the export's words were embedded in \(\['a photo of a \{\}.', .*give its "
                     r"teacher's text tower \(eval.text_tower=DIR\)"):
    run_lib.run(m, evaldir, 'evaluate')
  m.eval.text_tower = teacher
  run_lib.run(m, evaldir, 'evaluate')
  with open(os.path.join(evaldir, 'results.json')) as f:
    zs = json.load(f)['zero_shot']
  assert zs['templates'] == list(TEMPLATES)
  assert zs['text_tower']['words'] == ['chair', 'flask', 'jet plane', 'recliner']
  ref = _reference_kernel(model, folder, ['jet plane', 'flask', 'recliner', 'chair'], TEMPLATES)
  chair = ref[:, 2] + ref[:, 3]
  kernel = np.stack([ref[:, 0], ref[:, 1], chair / np.linalg.norm(chair)], 1)
  want = np.array([0, 5, 8])[np.argmax(emb @ kernel, 1)]
  assert zs['pretrained']['accuracy'] == pytest.approx(np.mean(want == data['label']))
  m.eval.zero_shot_templates = ()
  # kept while its files stay: a file changed since is read again
  kept = zero_shot.load_text_tower(teacher, 'x')
  assert zero_shot.load_text_tower(teacher, 'x') is kept
  info = os.path.join(teacher, 'text', 'text.json')
  os.utime(info, ns=(os.stat(info).st_atime_ns, os.stat(info).st_mtime_ns + 10**9))
  assert zero_shot.load_text_tower(teacher, 'x') is not kept
  zero_shot.release_shared()
  # another text tower (its checksum not the export's): refused before any stage
  other = teacher_io.load_text(teacher)
  other.param_checksum = 'e' * 64
  monkeypatch.setattr(teacher_io, 'load_text', lambda path: other)
  with pytest.raises(run_lib.UserError, match=r"eval.text_tower = .*: the text tower given "
                     r"\(checksum eeeeeeeeeeeeeeee\) is not the one of the teacher"):
    run_lib.run(m, str(tmp_path / 'again'), 'all')
  assert not os.path.exists(tmp_path / 'again' / 'data')
  monkeypatch.undo()
  m.eval.text_tower = str(tmp_path / 'nowhere')
  with pytest.raises(run_lib.UserError, match=r"eval.text_tower = .*nowhere.*has no text tower"):
    run_lib.run(m, str(tmp_path / 'again'), 'all')
  with pytest.raises(ValueError, match=r"no readout into a CLIP teacher's embedding"):
    zero_shot.export_text_tower(m, {'classifier': 'imagenet'})
  m.eval.encoder = ''
  with pytest.raises(config_util.ConfigError, match=r'config.eval.text_tower = .*eval-only run of '
                     r'a CLIP export \(config.eval.encoder, empty here\)'):
    config_util.check_config(m)
