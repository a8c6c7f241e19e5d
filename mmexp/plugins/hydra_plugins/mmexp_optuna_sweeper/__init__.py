"""Hydra's entry to mmexp's Optuna sweeper (``hydra/sweeper=mmexp_optuna``)."""
