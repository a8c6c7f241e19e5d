"""Run records: local files always, Weights & Biases when available."""
