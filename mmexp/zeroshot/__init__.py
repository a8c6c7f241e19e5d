"""Zero-shot evaluation of an image and a text tower: classification by prompts, retrieval.

``mmexp-eval zeroshot=classify|retrieval`` (conf/zeroshot/) on a checkpoint, or with
``ckpt_path=null`` on a model built from config; results in ``zeroshot.json``.
"""

from mmexp.zeroshot.classify import ZeroShotClassification, class_embeddings
from mmexp.zeroshot.retrieval import ZeroShotRetrieval
from mmexp.zeroshot.towers import AlignedTowers

__all__ = ["AlignedTowers", "ZeroShotClassification", "ZeroShotRetrieval", "class_embeddings"]
