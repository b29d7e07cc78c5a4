"""The views picture of prepare (WORKDIR/plots/views.png): views, patch grid, projected centres."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from crossjepa import fileio
from crossjepa.data import correspondence


def plot_views(path: str, images, centers_uv, corr, patch_size: int,
               max_objects: int = 8) -> None:
  """PNG of views with the patch grid and group centres (one row per object).

  Visible centres (corr >= 0) are filled dots coloured by group index; occluded or out-of-frame
  centres are hollow grey crosses. Written atomically (fileio.atomic_write).

  Args:
    path: output PNG path.
    images: [n,V,H,W,3] uint8.
    centers_uv: [n,V,G,2] projected centres in pixel coordinates.
    corr: [n,V,G] patch index or -1.
    patch_size: grid spacing in pixels.
    max_objects: at most this many rows are drawn.
  """
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  images = np.asarray(images)
  centers_uv = np.asarray(centers_uv)
  corr = np.asarray(corr)
  if images.ndim != 5 or images.shape[-1] != 3:
    raise ValueError(f'plot_views: images must be [n,V,H,W,3], got {images.shape}')
  n, num_views, height, width = images.shape[:4]
  num_groups = corr.shape[-1]
  if corr.shape != (n, num_views, num_groups) or centers_uv.shape != (n, num_views, num_groups, 2):
    raise ValueError(f'plot_views: centers_uv {centers_uv.shape} / corr {corr.shape} do not match '
                     f'images {images.shape}')
  n = min(n, max_objects)
  colors = plt.get_cmap('hsv')(np.arange(num_groups) / max(num_groups, 1))
  fig, axes = plt.subplots(n, num_views, figsize=(1.6 * num_views, 1.6 * n), squeeze=False)
  for i in range(n):
    for j in range(num_views):
      ax = axes[i, j]
      # Pixel (r, c) spans [c, c+1) x [r, r+1), so the extent puts pixel edges on integers.
      ax.imshow(images[i, j], extent=(0, width, height, 0), interpolation='nearest')
      for x in range(0, width + 1, patch_size):
        ax.axvline(x, color='k', lw=0.3, alpha=0.4)
      for y in range(0, height + 1, patch_size):
        ax.axhline(y, color='k', lw=0.3, alpha=0.4)
      vis = corr[i, j] >= 0
      uv = centers_uv[i, j]
      ax.scatter(uv[~vis, 0], uv[~vis, 1], marker='x', s=10, c='0.55', linewidths=0.6)
      ax.scatter(uv[vis, 0], uv[vis, 1], s=10, c=colors[vis], edgecolors='k', linewidths=0.3)
      ax.set_xlim(0, width)
      ax.set_ylim(height, 0)
      ax.set_xticks([])
      ax.set_yticks([])
      if i == 0:
        ax.set_title(f'view {j}', fontsize=7)
  fig.tight_layout(pad=0.2)
  try:
    with fileio.atomic_write(path, 'wb') as f:
      fig.savefig(f, dpi=110, format='png')
  finally:
    plt.close(fig)


def plot_examples(path: str, examples: Sequence[dict[str, Any]], patch_size: int) -> None:
  """plots/views.png: a few objects' views with their projected centres and correspondence."""
  images = np.stack([e['views']['image'] for e in examples])
  uv = np.stack([np.asarray(correspondence.project(
      e['centers'], e['views']['world_to_cam'], e['views']['intrinsics'])[0]) for e in examples])
  corr = np.stack([e['views']['corr'] for e in examples])
  plot_views(path, images, uv, corr, patch_size)
