"""Named training strategies, defined once: the CLI, the app and the bench read them from here."""

from __future__ import annotations

from dataclasses import replace

from ..config import CoMetConfig, TrainConfig, TrustConfig

__all__ = ["STRATEGIES", "DEFAULT_STRATEGY", "COMET_PARTS", "strategy_config", "comet_parts"]

DEFAULT_STRATEGY = "trust"

# name -> (CoMet settings, prior, trust settings). "comet" and "comet+prior" are the defaults before the
# robust first opinion took charge (kept to reproduce earlier tables): image weights only set sampling.
STRATEGIES: dict[str, tuple[CoMetConfig, str, TrustConfig]] = {
    "trust": (CoMetConfig(), "memory", TrustConfig()),
    "trust+patch": (CoMetConfig(), "memory", TrustConfig(patch_weights=True)),
    "trust+trim": (CoMetConfig(), "memory", TrustConfig(trim_rounds=2)),
    "baseline": (CoMetConfig.baseline(), "none", TrustConfig()),
    "refine": (CoMetConfig.refinement(), "none", TrustConfig()),
    "comet": (CoMetConfig(loss_weights=False), "none", TrustConfig()),
    "comet+prior": (CoMetConfig(loss_weights=False), "memory", TrustConfig(mode="blend")),
}


def strategy_config(name: str, base: TrainConfig | None = None) -> TrainConfig:
    """``base`` (default ``TrainConfig()``) with the CoMet, prior and trust settings of strategy ``name``."""
    comet, prior, trust = _strategy(name)
    return replace(base or TrainConfig(), comet=comet, prior=prior, trust=trust)  # type: ignore[arg-type]


# The CoMet switches a strategy turns on or off (the app shows them as checkboxes, the run listing names them).
COMET_PARTS = ("soft_weights", "refine", "meta", "adaptive_l2")


def comet_parts(name: str) -> tuple[str, ...]:
    """The CoMet switches strategy ``name`` turns on, in ``COMET_PARTS`` order."""
    comet = _strategy(name)[0]
    return tuple(part for part in COMET_PARTS if getattr(comet, part))


def _strategy(name: str) -> tuple[CoMetConfig, str, TrustConfig]:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {list(STRATEGIES)}")
    return STRATEGIES[name]
