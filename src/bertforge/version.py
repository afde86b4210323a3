"""The package version, in a module of its own so that low layers (data preparation workers)
can name it without going through the package root."""

__version__ = "0.1.0"
