"""The repository's own tools, not installed with the package: the demo, the
experiment runner of the recipes and the generator of the tiny speech corpus.
They find the recipes relative to this repository, so they run from a
checkout (``python -m tools.demo``), as the recipes do.
"""
