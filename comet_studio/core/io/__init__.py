"""Reading and writing models and run outputs."""

from .checkpoint import FORMAT_VERSION, CheckpointError, read_checkpoint, write_checkpoint

__all__ = ["FORMAT_VERSION", "CheckpointError", "read_checkpoint", "write_checkpoint"]
