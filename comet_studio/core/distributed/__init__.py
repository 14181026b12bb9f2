"""Engines that run independent jobs (train-all categories, bench cells) in this process or on a Ray
cluster, and streaming batch prediction on either. Ray is imported only when ``engine="ray"`` is asked for;
without it, that request fails with the install command."""

from .engine import (ENGINES, RAY_INSTALL_HINT, Engine, EngineName, LocalEngine, RayUnavailableError, TaskOutcome,
                     make_engine, require_ray)

__all__ = ["ENGINES", "RAY_INSTALL_HINT", "Engine", "EngineName", "LocalEngine", "RayUnavailableError",
           "TaskOutcome", "make_engine", "require_ray"]
