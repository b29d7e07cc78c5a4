"""ScanObjectNN frozen-feature evaluation of an exported point encoder (linear SVM probe + few-shot).

Pretrain and export once (e.g. ShapeNet-55 with configs/paper.py, or the embedded default; --mode=all
ends with the export stage, which writes PRETRAIN_WORKDIR/export), then:

    python -m crossjepa.main --config=configs/scanobjectnn.py:PB_T50_RS --workdir=/tmp/sonn \
        --config.data.root=/path/h5_files --config.eval.encoder=PRETRAIN_WORKDIR/export --mode=all

(`:OBJ_BG` and `:OBJ_ONLY` likewise; data.root = the official `h5_files` folder holding main_split/
and main_split_nobg/). With eval.encoder set, --mode=all runs prepare -> evaluate only: eval-only
records (points, FPS centres, kNN groups, labels; no renders, no teacher), then WORKDIR/results.json.

Variants (shared/DATASETS.md), 15 classes (bag ... toilet), 2,048 points per object (h5 `data`,
`label`; the background `mask` is not used, OBJ_BG keeps the background points as released):
  OBJ_BG     main_split/{training,test}_objectdataset.h5                   2,309 / 581
  OBJ_ONLY   main_split_nobg/{training,test}_objectdataset.h5              2,309 / 581
  PB_T50_RS  main_split/{training,test}_objectdataset_augmentedrot_scale75.h5   11,416 / 2,882

Protocol (recorded next to every number in results.json):
  * points: 2,048 -> unit-sphere normalised -> 1,024 by farthest point sampling (start at point 0);
    64 FPS centres with 32-NN groups. The exported encoder's num_points / num_groups / group_size
    must equal these (else a clear error): override --config.data.* to match another export.
  * features: concat(max, mean) of the frozen encoder's final tokens; no augmentation, no voting.
  * linear probe: SVC(kernel='linear') (I2P-MAE fixes C=0.018 on ScanObjectNN); here C is chosen
    from the grid below by 5-fold cross-validation on the TRAIN split only; the chosen C is reported.
  * few-shot: {5,10}-way {10,20}-shot, 20 queries per class, 10 fixed folds, linear SVM at fixed
    C = eval.fewshot_C on frozen features (mean +- std over folds); fine-tuned on each fold, as
    the field's tables are, with --config.eval.finetune.fewshot=True (results.json
    fewshot_finetune, the same folds, eval.finetune's recipe).
  * random-init floor: the same architecture at initialisation, mean +- std over eval.seeds.
  * zero-shot, no label (where the export carries a readout: pretrained with an EfficientNet-Lite
    teacher): the export's readout into the teacher's embedding, through its ImageNet classifier;
    all 15 classes have ImageNet names (crossjepa/evaluation/zero_shot.py SCANOBJECTNN); beside
    it, the random-init control of the export's seeds.
  * the published split sizes are asserted (data.strict_counts).
"""
from crossjepa import config_util

default = config_util.sibling_config(__file__, 'default')

VARIANTS = ('OBJ_BG', 'OBJ_ONLY', 'PB_T50_RS')


def get_config(arg=None):
  variant = arg or 'PB_T50_RS'
  if variant not in VARIANTS:
    raise ValueError(f'configs/scanobjectnn.py:{variant}: expected one of {list(VARIANTS)}')
  c = default.get_config()
  d = c.data
  d.source = 'scanobjectnn'
  d.variant = variant
  d.name = f'scanobjectnn_{variant.lower()}'
  d.num_points = 1024
  d.num_groups = 64
  d.group_size = 32
  d.num_classes = 15
  d.eval_only = True            # frozen-feature evaluation reads points/centers/groups/label only
  d.keep_images = False
  d.strict_counts = True        # the published split sizes; False for subsets
  d.teacher_chunk = 64          # objects per jitted FPS/kNN call in prepare
  d.pretrain_splits = ('train',)  # unused in eval-only mode
  d.eval_train_split = 'train'
  d.eval_test_split = 'test'
  c.model.point = 'S'           # used only without eval.encoder (the export names its own model)
  e = c.eval
  e.svm_classifier = 'svc_linear'
  e.svm_C = (0.001, 0.003, 0.006, 0.018, 0.03, 0.1, 0.3, 1.0)
  e.cv_folds = 5
  e.fewshot_ways = (5, 10)
  e.fewshot_shots = (10, 20)
  e.fewshot_queries = 20
  e.fewshot_folds = 10
  e.seeds = (0, 1, 2)
  e.batch_size = 64
  return c
