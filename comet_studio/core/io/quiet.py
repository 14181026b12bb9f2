"""Silence third-party prints safely from several threads."""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterator

__all__ = ["quiet_stdout"]

# redirect_stdout swaps the process-wide sys.stdout: two threads doing it at once (the app's concurrent
# trainings and exports) would restore each other's StringIO and leave stdout silenced for good.
_STDOUT_SWAP = threading.Lock()


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Discard what the body prints to stdout, one thread at a time."""
    with _STDOUT_SWAP, contextlib.redirect_stdout(io.StringIO()):
        yield
