"""Helpers every other package may use and that import nothing of the project: hashing, the project root, image
decoding, the `data.dvc` pointer. This package sits at the bottom of the layers (pyproject.toml [tool.importlinter])."""
