"""tflic: learned image compression with Swin transforms and a transformer context model."""

__version__ = "0.1.0"
