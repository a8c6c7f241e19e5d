"""Robustness of a trained model: modalities missing or degraded at evaluation.

``mmexp-eval ckpt_path=... robustness=<grid>`` scores one checkpoint under a grid of
conditions (every subset of the modalities, per-modality missing rates, per-modality
perturbations at increasing levels) and writes ``robustness.json`` / ``robustness.csv`` in
the run folder; ``mmexp-table`` reads them as columns.
"""
