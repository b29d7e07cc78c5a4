"""Image normalisation constants and the ImageNet input normalisation (below models and data).

The teachers' input statistics in pixel units (0-255) and `normalize_images`, shared by the input
pipeline, the teacher cache, the offline teacher stage and the teacher specs, so that no data
module reaches into a model file for them.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_MEAN_PX = tuple(255.0 * m for m in IMAGENET_MEAN)
IMAGENET_STD_PX = tuple(255.0 * s for s in IMAGENET_STD)
TF_LITE_MEAN_PX = (127.0, 127.0, 127.0)   # efficientnet/lite: MEAN_RGB = [127.0] * 3
TF_LITE_STD_PX = (128.0, 128.0, 128.0)    # STDDEV_RGB = [128.0] * 3
# CLIP's (OpenAI's) image statistics, which open_clip and HF's CLIPImageProcessor use for CLIP towers
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_MEAN_PX = tuple(255.0 * m for m in CLIP_MEAN)
CLIP_STD_PX = tuple(255.0 * s for s in CLIP_STD)


def normalize_images(images):
  """uint8 RGB images [..., H, W, 3] -> float32 normalised with the ImageNet mean / std.

  Works on numpy arrays (stays numpy, for input pipelines) and on jax arrays.
  """
  xp = jnp if isinstance(images, jax.Array) else np
  images = xp.asarray(images)
  if images.shape[-1] != 3:
    raise ValueError(f'normalize_images: expected [..., H, W, 3] RGB images, got shape {images.shape}')
  mean = xp.asarray(IMAGENET_MEAN, dtype=xp.float32)
  std = xp.asarray(IMAGENET_STD, dtype=xp.float32)
  return (images.astype(xp.float32) / 255.0 - mean) / std
