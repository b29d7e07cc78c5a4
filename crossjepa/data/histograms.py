"""Colour histograms of rendered views: the per-view RGB histogram stored with each object."""
from __future__ import annotations

import numpy as np


def color_histogram(rgb, depth, bins: int) -> np.ndarray:
  """Per-view RGB histogram over the object's pixels: [V, 3*bins] float32.

  Object pixels are those with finite depth (the background is white and would otherwise dominate).
  Channel c occupies columns [c*bins, (c+1)*bins) with equal-width bins over [0, 256). Each view's
  vector sums to 1 (each channel's part to 1/3); a view with no object pixel is all zeros (no NaN).
  """
  rgb = _check_rgb(rgb)
  depth = np.asarray(depth)
  if depth.shape != rgb.shape[:3]:
    raise ValueError(f'color_histogram: depth must be {rgb.shape[:3]}, got {depth.shape}')
  return masked_color_histogram(rgb, np.isfinite(depth), bins)


def masked_color_histogram(rgb, mask, bins: int) -> np.ndarray:
  """color_histogram over the pixels where mask [V,H,W] is true (given renders: their alpha)."""
  rgb = _check_rgb(rgb)
  mask = np.asarray(mask, bool)
  if mask.shape != rgb.shape[:3]:
    raise ValueError(f'color_histogram: the mask must be {rgb.shape[:3]}, got {mask.shape}')
  if not 1 <= int(bins) <= 256:
    raise ValueError(f'color_histogram: bins must be in [1, 256], got {bins}')
  bins = int(bins)
  num_views = rgb.shape[0]
  mask = mask.reshape(num_views, -1)
  bin_idx = (rgb.reshape(num_views, -1, 3).astype(np.int64) * bins) // 256     # [V,P,3]
  flat = (np.arange(num_views)[:, None, None] * 3 * bins
          + np.arange(3)[None, None, :] * bins + bin_idx)
  weights = np.broadcast_to(mask[..., None], flat.shape).astype(np.float64)
  hist = np.bincount(flat.reshape(-1), weights=weights.reshape(-1),
                     minlength=num_views * 3 * bins).reshape(num_views, 3 * bins)
  count = mask.sum(1, keepdims=True).astype(np.float64)
  hist = np.where(count > 0, hist / np.maximum(3.0 * count, 1.0), 0.0)
  return hist.astype(np.float32)


def _check_rgb(rgb) -> np.ndarray:
  rgb = np.asarray(rgb)
  if rgb.ndim != 4 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
    raise ValueError(f'color_histogram: rgb must be uint8 [V,H,W,3], got {rgb.dtype} {rgb.shape}')
  return rgb
