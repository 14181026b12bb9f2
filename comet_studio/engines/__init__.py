"""Where jobs run: independent jobs (train-all categories, bench cells) in this process (``LocalEngine``, the
default) or as Ray tasks on a cluster (``RayEngine``). The workflows above hand their jobs to an engine and
never branch on which; engines import nothing but the standard library and Ray. Ray is imported only when
``engine="ray"`` is asked for; without it, that request fails with the install command."""

from .engine import (ENGINES, RAY_INSTALL_HINT, Engine, EngineName, LocalEngine, RayUnavailableError, TaskOutcome,
                     make_engine, require_ray)

__all__ = ["ENGINES", "RAY_INSTALL_HINT", "Engine", "EngineName", "LocalEngine", "RayUnavailableError",
           "TaskOutcome", "make_engine", "require_ray"]
