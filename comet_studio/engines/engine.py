"""Where independent jobs run: in this process (``LocalEngine``) or as Ray tasks (``RayEngine``).

A job is a module-level function applied to one picklable item (a category to train, a bench cell). The
engine yields one ``TaskOutcome`` per item as it finishes, so the caller can record results (and stay
resumable) while the rest still run. Ray is imported only by ``make_engine("ray")``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, Protocol, TypeVar

from .outcome import TaskOutcome, describe_error

__all__ = ["EngineName", "ENGINES", "TaskOutcome", "Engine", "LocalEngine", "RayUnavailableError", "make_engine",
           "require_ray", "describe_error", "RAY_INSTALL_HINT"]

T = TypeVar("T")
R = TypeVar("R")
EngineName = Literal["local", "ray"]
ENGINES: tuple[str, ...] = ("local", "ray")
RAY_INSTALL_HINT = 'pip install "comet-studio[ray]"'


class RayUnavailableError(RuntimeError):
    """``--engine ray`` without Ray installed."""


class Engine(Protocol):
    """Runs ``fn(item)`` for every item, yielding outcomes in completion order (any order)."""

    name: str

    def map_unordered(self, fn: Callable[[Any], R], items: Sequence[Any]) -> Iterator[TaskOutcome[R]]: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Engine": ...

    def __exit__(self, *exc: object) -> None: ...


class LocalEngine:
    """Jobs one after the other in this process (the default: needs no Ray, shares the caller's threads)."""

    name = "local"

    def map_unordered(self, fn: Callable[[Any], R], items: Sequence[Any]) -> Iterator[TaskOutcome[R]]:
        for index, item in enumerate(items):
            try:
                value = fn(item)
            except Exception as error:  # noqa: BLE001 - one broken job must not stop the others
                yield TaskOutcome(index, None, describe_error(error))
            else:
                yield TaskOutcome(index, value, None)

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> "LocalEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_engine(name: str, *, address: str | None = None, num_cpus: int | None = None,
                cpus_per_task: float = 1.0) -> Engine:
    """``local`` -> ``LocalEngine``; ``ray`` -> ``RayEngine`` connected to ``address`` (``auto``, ``ray://host:10001``,
    ``host:6379``) or, without one, to a local cluster started here with ``num_cpus`` CPUs (default: all)."""
    if name == "local":
        if address is not None:
            raise ValueError("--address names a Ray cluster; it needs --engine ray")
        return LocalEngine()
    if name != "ray":
        raise ValueError(f"engine must be one of {list(ENGINES)}, got {name!r}")
    require_ray()
    from .ray_engine import RayEngine

    return RayEngine(address=address, num_cpus=num_cpus, cpus_per_task=cpus_per_task)


def require_ray() -> None:
    """Raise ``RayUnavailableError`` with the install command when Ray (or Ray Data) cannot be imported."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError as error:
        raise RayUnavailableError(f"--engine ray needs Ray, which is not installed ({error}): "
                                  f"{RAY_INSTALL_HINT}") from error
