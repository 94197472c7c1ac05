"""Named optimizers: thin typed classes over ``Composed`` with each paper's defaults.

One module per paper; ``lrfree/__init__.py`` re-exports the classes.
"""
