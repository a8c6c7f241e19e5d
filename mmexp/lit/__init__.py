"""LightningModules and the pieces injected into them."""
