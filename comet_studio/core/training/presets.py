"""Named training strategies, defined once: the CLI, the app and the bench read them from here."""

from __future__ import annotations

from dataclasses import replace

from ..config import CoMetConfig, TrainConfig, TrustConfig

__all__ = ["STRATEGIES", "DEFAULT_STRATEGY", "strategy_config"]

DEFAULT_STRATEGY = "trust"

# name -> (CoMet settings, prior, trust settings). "comet" and "comet+prior" are the defaults before the
# robust first opinion took charge (kept to reproduce earlier tables): image weights only set sampling.
STRATEGIES: dict[str, tuple[CoMetConfig, str, TrustConfig]] = {
    "trust": (CoMetConfig(), "memory", TrustConfig()),
    "trust+patch": (CoMetConfig(), "memory", TrustConfig(patch_weights=True)),
    "baseline": (CoMetConfig.baseline(), "none", TrustConfig()),
    "refine": (CoMetConfig.refinement(), "none", TrustConfig()),
    "comet": (CoMetConfig(loss_weights=False), "none", TrustConfig()),
    "comet+prior": (CoMetConfig(loss_weights=False), "memory", TrustConfig(mode="blend")),
}


def strategy_config(name: str, base: TrainConfig | None = None) -> TrainConfig:
    """``base`` (default ``TrainConfig()``) with the CoMet, prior and trust settings of strategy ``name``."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {list(STRATEGIES)}")
    comet, prior, trust = STRATEGIES[name]
    return replace(base or TrainConfig(), comet=comet, prior=prior, trust=trust)  # type: ignore[arg-type]
