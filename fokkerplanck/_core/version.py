"""The package version (one place; ``setup.cfg`` reads it statically)."""
__version__ = "0.1.0"
