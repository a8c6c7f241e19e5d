"""What each modality contributes and which interactions a trained model uses.

``mmexp-eval ckpt_path=... analysis=[...]`` runs the analyses of a checkpoint (modality
contribution and Shapley values, EMAP, partial information decomposition, attention and
saliency) and writes ``analysis.json`` in the run folder.
"""
