"""Named speed/strength presets, defined once: the CLI (``--quality``), the app and the bench read them.

A preset fixes what costs time (backbone, input size, training length for a trained head, the number of sparse
memories for the memory ensemble, the default detector); the strategy (``training/presets.py``)
fixes how contamination is handled, and the two combine freely. ``default`` is what every config dataclass
defaults to, so a run without a preset is a ``default`` run. Measured cost and accuracy of each preset on the
three development sets: README, "Detector strength and speed".
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .config import BackboneConfig, ModelConfig, TrainConfig
from .detectors.memory import MemoryConfig

__all__ = ["Quality", "QUALITY", "DEFAULT_QUALITY", "quality_configs"]


@dataclass(frozen=True)
class Quality:
    backbone: str
    image_size: int
    rounds: int
    memories: int
    summary: str


_DEFAULTS = BackboneConfig(), TrainConfig(), MemoryConfig()

QUALITY: dict[str, Quality] = {
    "fast": Quality(_DEFAULTS[0].name, _DEFAULTS[0].image_size, _DEFAULTS[1].rounds // 2,
                    _DEFAULTS[2].n_memories // 2,
                    "half the memories and half the training rounds: about half the fit and memory inference time"),
    "default": Quality(_DEFAULTS[0].name, _DEFAULTS[0].image_size, _DEFAULTS[1].rounds, _DEFAULTS[2].n_memories,
                       "EfficientNet-Lite0 at 256 px, 8 memories (12 rounds for a trained head)"),
    "strong": Quality("efficientnet-lite2", _DEFAULTS[0].image_size, _DEFAULTS[1].rounds, _DEFAULTS[2].n_memories,
                      "EfficientNet-Lite2 features: about 2x the extraction time"),
}
DEFAULT_QUALITY = "default"


def quality_configs(name: str, model: ModelConfig | None = None,
                    train: TrainConfig | None = None) -> tuple[ModelConfig, TrainConfig]:
    """``model`` and ``train`` (defaults: the dataclass defaults) with the backbone, size, rounds and memories
    of preset ``name``; every other setting is kept."""
    if name not in QUALITY:
        raise ValueError(f"unknown quality preset {name!r}; choose from {list(QUALITY)}")
    preset = QUALITY[name]
    model = model or ModelConfig()
    backbone = replace(model.backbone, name=preset.backbone, image_size=preset.image_size)
    memory = replace(model.memory, n_memories=preset.memories)
    return replace(model, backbone=backbone, memory=memory), replace(train or TrainConfig(), rounds=preset.rounds)
