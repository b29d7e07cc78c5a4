"""Models: the point encoder, the predictor, the ViT and the teacher protocol (`load_teacher`)."""


def load_teacher(directory: str, **kwargs):
  """Any registered teacher folder -> a callable on uint8 images (see `crossjepa.models.teacher`)."""
  from crossjepa.models import teacher  # pylint: disable=g-import-not-at-top
  return teacher.load_teacher(directory, **kwargs)
