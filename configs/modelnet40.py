"""ModelNet40 frozen-feature evaluation of an exported point encoder (linear SVM probe + few-shot).

Pretrain and export once (e.g. ShapeNet-55 with configs/paper.py, or the embedded default; --mode=all
ends with the export stage, which writes PRETRAIN_WORKDIR/export), then:

    python -m crossjepa.main --config=configs/modelnet40.py:ply_hdf5_2048 --workdir=/tmp/mn40 \
        --config.data.root=/path/modelnet40_ply_hdf5_2048 \
        --config.eval.encoder=PRETRAIN_WORKDIR/export --mode=all

    python -m crossjepa.main --config=configs/modelnet40.py:normal_resampled --workdir=/tmp/mn40nr \
        --config.data.root=/path/modelnet40_normal_resampled \
        --config.eval.encoder=PRETRAIN_WORKDIR/export --mode=all

    python -m crossjepa.main --config=configs/modelnet40.py:modelnet10_normal_resampled \
        --workdir=/tmp/mn10 --config.data.root=/path/modelnet40_normal_resampled \
        --config.eval.encoder=PRETRAIN_WORKDIR/export --mode=all

With eval.encoder set, --mode=all runs prepare -> evaluate only: eval-only records (points, FPS centres,
kNN groups, labels; no renders, no teacher) of the train/test splits, then WORKDIR/results.json.

Variants (shared/DATASETS.md):
  ply_hdf5_2048     PointNet's release: 9,840 train / 2,468 test, 2,048 unit-sphere points per shape
                    (h5 `data`, `label`). The Point-JEPA / point2vec / I2P-MAE / CrossPoint SVM setting.
  normal_resampled  `<class>/<class>_NNNN.txt` (x,y,z,nx,ny,nz; normals dropped): 9,843 / 2,468.
                    The Point-BERT / Point-MAE / ACT / ReCon setting.
  modelnet10_normal_resampled  the same tree through the release's ModelNet10 lists
                    (modelnet10_shape_names.txt, modelnet10_{train,test}.txt): 10 classes,
                    3,991 / 908.

Partial downloads: with --config.data.strict_counts=False the files that are there are used (a
warning states how many of the listed files, in how many classes); with strict counts (the
default here) a missing listed file is an error naming it and the classes with no file.

Protocol (recorded next to every number in results.json):
  * points: unit-sphere normalised, 1,024 by farthest point sampling (start at point 0); 64 FPS
    centres with 32-NN groups — the Point-MAE/Point-JEPA tokenizer. The exported encoder's
    num_points / num_groups / group_size must equal these (else a clear error): override
    --config.data.num_points / num_groups / group_size to match another export.
  * features: concat(max, mean) of the frozen encoder's final tokens; no augmentation, no voting.
  * linear probe: ply_hdf5_2048 -> SVC(kernel='linear') as Point-JEPA/point2vec (they fix C=0.012);
    normal_resampled -> LinearSVC as Point-BERT (C=1.0) / ReCon (C=0.075). Here C is chosen from the
    grid below by 5-fold cross-validation on the TRAIN split only (never on test); the chosen C is
    reported. Both classifiers stay available via --config.eval.svm_classifier.
  * few-shot: {5,10}-way {10,20}-shot, 20 queries per class, 10 fixed folds, linear SVM at fixed
    C = eval.fewshot_C on frozen features (mean +- std over folds). The field's few-shot
    tables fine-tune the encoder on each fold: --config.eval.finetune.fewshot=True adds that
    (results.json fewshot_finetune, the same folds, eval.finetune's recipe).
  * random-init floor: the same architecture at initialisation, mean +- std over eval.seeds.
  * zero-shot, no label (where the export carries a readout: pretrained with an EfficientNet-Lite
    teacher): the export's readout into the teacher's embedding, through its ImageNet classifier;
    30 of the 40 classes have ImageNet names (crossjepa/evaluation/zero_shot.py MODELNET40), the
    others' objects are left out; beside it, the random-init control of the export's seeds.
  * the published split sizes are asserted (data.strict_counts).
"""
from crossjepa import config_util

default = config_util.sibling_config(__file__, 'default')

VARIANTS = ('ply_hdf5_2048', 'normal_resampled', 'modelnet10_normal_resampled')


def get_config(arg=None):
  variant = arg or 'ply_hdf5_2048'
  if variant not in VARIANTS:
    raise ValueError(f'configs/modelnet40.py:{variant}: expected one of {list(VARIANTS)}')
  c = default.get_config()
  d = c.data
  d.source = 'modelnet40'
  d.variant = variant
  d.name = variant if variant.startswith('modelnet10') else f'modelnet40_{variant}'
  d.num_points = 1024
  d.num_groups = 64
  d.group_size = 32
  d.num_classes = 0             # the release's own class list (its count asserted under strict_counts)
  d.eval_only = True            # frozen-feature evaluation reads points/centers/groups/label only
  d.keep_images = False
  d.strict_counts = True        # the published split sizes and class count; False for subsets
  d.teacher_chunk = 64          # objects per jitted FPS/kNN call in prepare
  d.pretrain_splits = ('train',)  # unused in eval-only mode
  d.eval_train_split = 'train'
  d.eval_test_split = 'test'
  # prepare: one worker process per CPU core reads and normalises the text files (the h5 release is
  # read whole, in the main process)
  d.num_workers = -1 if variant in ('normal_resampled', 'modelnet10_normal_resampled') else 0
  c.model.point = 'S'           # used only without eval.encoder (the export names its own model)
  e = c.eval
  e.svm_classifier = 'svc_linear' if variant == 'ply_hdf5_2048' else 'linear_svc'
  e.svm_C = (0.001, 0.003, 0.006, 0.012, 0.03, 0.075, 0.3, 1.0)
  e.cv_folds = 5
  e.fewshot_ways = (5, 10)
  e.fewshot_shots = (10, 20)
  e.fewshot_queries = 20
  e.fewshot_folds = 10
  e.seeds = (0, 1, 2)
  e.batch_size = 64
  return c
