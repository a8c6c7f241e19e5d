"""The embedded default data set: synthetic shapes shown as image, caption and audio clip.

Each task defines the label so that a known kind of multimodal interaction is needed to
predict it (redundancy, uniqueness of one modality, synergy, or a mix); see
:mod:`mmexp.data.shapes.tasks`. :func:`generate_shapes` writes a data set in the manifest
format that user data also comes in.
"""

from mmexp.data.shapes.generate import generate_shapes
from mmexp.data.shapes.tasks import TASKS

__all__ = ["TASKS", "generate_shapes"]
