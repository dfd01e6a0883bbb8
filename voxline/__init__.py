"""voxline: a real-time voice pipeline service."""

__version__ = "0.1.0"
__all__ = ["__version__"]
