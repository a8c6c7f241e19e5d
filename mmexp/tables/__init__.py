"""Turn folders of runs (or a W&B project) into paper tables and plots."""
