"""Metrics (torchmetrics-based)."""
