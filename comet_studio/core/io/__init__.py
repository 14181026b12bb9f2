"""Reading and writing models and run outputs (exporters live in ``core.io.export``)."""

from .atomic import atomic_path
from .checkpoint import FORMAT_VERSION, CheckpointError, read_checkpoint, write_checkpoint, write_checkpoint_file

__all__ = ["FORMAT_VERSION", "CheckpointError", "atomic_path", "read_checkpoint", "write_checkpoint",
           "write_checkpoint_file"]
