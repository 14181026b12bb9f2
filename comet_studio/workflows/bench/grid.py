"""The benchmark grid: settings, the cells (category x model x method x noise x seed), and how a cell's
model and method names become ``ModelConfig``/``TrainConfig``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ...core.config import BACKBONES, BackboneConfig, ModelConfig, TrainConfig, parse_views, with_settings
from ...core.data.mvtec import is_mvtec_category
from ...core.detectors.registry import DEFAULT_DETECTOR, REGISTRY
from ...core.training.presets import STRATEGIES, strategy_config

__all__ = ["METHODS", "MODELS", "BenchConfig", "Cell", "build_cells", "find_categories", "cell_configs"]

METHODS = tuple(STRATEGIES)  # a bench method is a training strategy
MODELS = tuple(REGISTRY)  # a bench model is a registered detector


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """What to run. The grid axes (``noise``, ``methods``, ``models``, ``seeds``, ``categories``) may grow
    between resumed runs; the settings that change every number (backbone, image size, rounds, steps,
    ``max_train``) may not (see ``settings``)."""

    noise: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4)
    methods: tuple[str, ...] = ("baseline", "refine", "comet")
    models: tuple[str, ...] = (DEFAULT_DETECTOR,)
    seeds: tuple[int, ...] = (0,)
    categories: tuple[str, ...] | None = None
    protocol: Literal["move", "overlap"] = "move"
    backbone: str = "efficientnet-lite0"
    image_size: int = 256
    rounds: int | None = None
    steps_per_round: int | None = None
    max_train: int | None = None
    device: str = "auto"
    tta: tuple[str, ...] = ()  # test-time views of every model (ModelConfig.tta)
    augment: tuple[str, ...] = ()  # training views of every model (ModelConfig.augment)
    # Dotted model settings of every model (``with_settings``), e.g. (("backbone.layers", ["block4"]),): for
    # ablations. Backbone ones change the cached features too.
    model_settings: tuple[tuple[str, object], ...] = ()

    def __post_init__(self) -> None:
        for name in ("noise", "methods", "models", "seeds"):
            value = tuple(getattr(self, name))
            object.__setattr__(self, name, value)
            _check(len(value) > 0, f"{name} must hold at least one value")
            _check(len(set(value)) == len(value), f"{name} holds duplicates: {list(value)}")
        if self.categories is not None:
            object.__setattr__(self, "categories", tuple(self.categories))
        _check(all(0.0 <= r <= 1.0 for r in self.noise), f"noise ratios must be in [0, 1], got {list(self.noise)}")
        bad = [m for m in self.methods if m not in METHODS]
        _check(not bad, f"unknown method(s) {bad}; choose from {list(METHODS)}")
        bad = [m for m in self.models if m not in MODELS]
        _check(not bad, f"unknown model(s) {bad}; choose from {list(MODELS)}")
        _check(self.protocol in ("move", "overlap"), f"protocol must be 'move' or 'overlap', got {self.protocol!r}")
        _check(self.backbone in BACKBONES, f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        _check(self.max_train is None or self.max_train >= 4, f"max_train must be >= 4, got {self.max_train!r}")
        # Fail now, not in the first cell: these build the configs every cell uses.
        object.__setattr__(self, "tta", parse_views(self.tta, "tta"))
        object.__setattr__(self, "augment", parse_views(self.augment, "augment"))
        object.__setattr__(self, "model_settings", tuple((str(k), v) for k, v in dict(self.model_settings).items()))
        self.model_config(DEFAULT_DETECTOR)
        TrainConfig(device=self.device, **self.train_overrides())

    def model_config(self, detector: str) -> ModelConfig:
        """The model config of every cell of ``detector`` (before its method); raises ValueError for a bad
        setting, naming it."""
        model = ModelConfig(detector=detector, backbone=BackboneConfig(name=self.backbone,  # type: ignore[arg-type]
                            image_size=self.image_size), tta=self.tta, augment=self.augment)
        return with_settings(model, dict(self.model_settings))

    def backbone_config(self, detector: str = DEFAULT_DETECTOR) -> BackboneConfig:
        """The features ``detector``'s cells are scored on (detectors may differ: ``pool_padding``)."""
        return self.model_config(detector).backbone

    def train_overrides(self) -> dict[str, int]:
        return {k: v for k, v in (("rounds", self.rounds), ("steps_per_round", self.steps_per_round)) if v is not None}

    def settings(self) -> dict[str, object]:
        """The settings that every result in one output folder must share (defaults resolved, so that
        ``--rounds 12`` and the default 12 are the same bench)."""
        train = TrainConfig(**self.train_overrides())
        settings = {"backbone": self.backbone, "image_size": self.image_size, "rounds": train.rounds,
                    "steps_per_round": train.steps_per_round, "max_train": self.max_train}
        # Only when set, so folders written before the views existed still resume.
        settings.update({k: list(v) for k, v in (("tta", self.tta), ("augment", self.augment)) if v})
        if self.model_settings:
            settings["model_settings"] = dict(self.model_settings)
        return settings


@dataclass(frozen=True, order=True)
class Cell:
    """One training + evaluation run of the grid."""

    category: str
    model: str
    method: str
    noise: float
    seed: int
    protocol: str

    @property
    def key(self) -> tuple[str, str, str, str, int, str]:
        """Identity used for resuming (noise rounded so that 0.1 read back from CSV matches)."""
        return (self.category, self.model, self.method, f"{self.noise:.6g}", int(self.seed), self.protocol)

    @property
    def name(self) -> str:
        return f"{self.model}_{self.method}_{self.protocol}_noise{self.noise:.6g}_seed{self.seed}"


def find_categories(root: str | Path, names: tuple[str, ...] | None = None) -> dict[str, Path]:
    """``{name: folder}`` of the MVTec-layout categories under ``root`` (or ``root`` itself when it is one),
    filtered to ``names`` when given."""
    # Absolute paths: the feature cache and the per-cell records stay valid from any working directory.
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"data root not found or not a folder: {root}")
    if is_mvtec_category(root):
        found = {root.name: root}
    else:
        found = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and is_mvtec_category(p)}
    if not found:
        raise FileNotFoundError(f"{root} is neither an MVTec AD category (train/ and test/ folders) nor a "
                                f"folder of such categories")
    if names:
        missing = [n for n in names if n not in found]
        if missing:
            raise ValueError(f"categories {missing} not found under {root}; available: {sorted(found)}")
        found = {n: found[n] for n in names}
    return found


def build_cells(categories: list[str], config: BenchConfig) -> list[Cell]:
    """Every cell, ordered so that one category's cells run together (its features stay loaded)."""
    return [Cell(category, model, method, float(noise), int(seed), config.protocol)
            for category in categories for noise in config.noise for seed in config.seeds
            for model in config.models for method in config.methods]


def cell_configs(cell: Cell, config: BenchConfig) -> tuple[ModelConfig, TrainConfig]:
    """The model and training configs of ``cell``: its method is a strategy of ``training/presets.py``
    (trust = the default, baseline, refine, comet = the earlier default, comet+prior = its blend prior).
    Raises ValueError for a model this install's ModelConfig does not know."""
    model = config.model_config(cell.model)
    train = strategy_config(cell.method, TrainConfig(device=config.device, seed=cell.seed,
                                                     **config.train_overrides()))
    return model, train
