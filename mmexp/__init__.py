"""mmexp: multimodal deep-learning experiments with Lightning and Hydra."""

__version__ = "0.1.0"

from pathlib import Path as _Path

# The Hydra config tree lives at the top of the repository, beside the package.
CONFIG_DIR = str(_Path(__file__).resolve().parent.parent / "conf")
