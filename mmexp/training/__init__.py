"""Training methods that balance how the modalities learn (the ``training=`` group)."""
