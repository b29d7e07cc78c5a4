"""crossjepa: cross-modal JEPA pretraining of 3D point-cloud encoders from 2D image encoders."""

from crossjepa.version import VERSION as __version__


def load_encoder(export_dir):
  """Loads an exported point encoder; returns a function points [B,N,3] -> features [B,F]."""
  from crossjepa.evaluation import export  # pylint: disable=g-import-not-at-top
  return export.load_encoder(export_dir)
