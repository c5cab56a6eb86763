"""The package version: one place, read by `aiopool.__version__` and the User-Agent header."""

__version__ = "0.1.0"
