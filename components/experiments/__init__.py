"""Experiments on top of training runs: the ablation grid (ablation/)."""
