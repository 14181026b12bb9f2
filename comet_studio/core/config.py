"""Frozen, keyword-only configuration objects, validated at construction and saved as JSON.

The CLI and the app build these; the core only receives them. Every field has a default that is a good
starting point for an uncurated folder of product photos.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from .detectors.registry import DEFAULT_DETECTOR, REGISTRY
# Each detector's settings class lives in its own module; these four are named here too for older imports.
from .detectors.flow import FlowConfig
from .detectors.memory import MemoryConfig
from .detectors.patchcore import PatchCoreConfig
from .detectors.simplenet import SimpleNetConfig
from .validation import check, check_at_least, check_range

__all__ = [
    "BackboneConfig",
    "SimpleNetConfig",
    "FlowConfig",
    "MemoryConfig",
    "PatchCoreConfig",
    "CoMetConfig",
    "TrustConfig",
    "ModelConfig",
    "TrainConfig",
    "config_to_dict",
    "config_from_dict",
    "with_settings",
    "parse_views",
]

BACKBONES = ("efficientnet-lite0", "efficientnet-lite2", "wide_resnet50_2")
FENCES = ("tukey", "mad", "lower")  # robust upper-fence rules (training/weighting.py: robust_fence)
DETECTORS = tuple(REGISTRY)  # the registered detectors, in the registry's order
# Test-time views (data/views.py): geometric ones first, then photometric ones.
TEST_VIEWS = ("hflip", "vflip", "rot90", "rot180", "rot270", "brighter", "darker", "contrast")


def parse_views(value: str | Sequence[str], name: str = "views") -> tuple[str, ...]:
    """Checked view names (``TEST_VIEWS``) from a JSON list, a tuple or the CLI's "hflip,rot90" alike;
    ``name`` (the setting) leads the message of an unknown or repeated view."""
    views = tuple(v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip())
    for view in views:
        check(view in TEST_VIEWS, f"{name}: unknown view {view!r}; choose from {', '.join(TEST_VIEWS)}")
    check(len(set(views)) == len(views), f"{name}: views repeat: {list(views)}")
    return views


@dataclass(frozen=True, kw_only=True)
class BackboneConfig:
    """Frozen pretrained feature extractor.

    ``layers`` are backbone-specific names; ``None`` picks the backbone's default pair (one stride-8 and one
    stride-16 stage, as SimpleNet/PatchCore use layer2+layer3 of a ResNet). ``feature_dim`` caps the patch
    feature size by adaptive average pooling over channels (PatchCore's projection); smaller features are kept.
    ``pool_padding``: how the ``patch_size`` neighbourhood average treats the cells beyond the map's edge:
    ``"zeros"`` counts them as zeros (PatchCore's and anomalib's ``AvgPool2d(3, 1, 1)``), so edge patches are
    damped; ``"inside"`` averages the cells inside the map only. ``None``: the detector's own
    (``DetectorSpec.pool_padding``, chosen leave-one-set-out: README), filled in by ``ModelConfig``; a
    ``FeatureExtractor`` built from a ``BackboneConfig`` alone then uses ``"inside"``.
    """

    name: str = "efficientnet-lite0"
    layers: tuple[str, ...] | None = None
    image_size: int = 256
    patch_size: int = 3
    feature_dim: int = 384
    pool_padding: Literal["zeros", "inside"] | None = None
    # A file written before a setting existed was made with this value of it (config_from_dict fills it in).
    LEGACY: ClassVar[dict[str, Any]] = {"pool_padding": "inside"}

    def __post_init__(self) -> None:
        check(self.name in BACKBONES, f"backbone must be one of {BACKBONES}, got {self.name!r}")
        check(32 <= self.image_size <= 2048 and self.image_size % 32 == 0,
               f"image_size must be a multiple of 32 in [32, 2048], got {self.image_size!r}")
        check(self.patch_size in (1, 3, 5, 7), f"patch_size must be 1, 3, 5 or 7, got {self.patch_size!r}")
        check_at_least(self, feature_dim=8)
        check(self.pool_padding in ("zeros", "inside", None),
              f"pool_padding must be 'zeros' or 'inside' (or None: the detector's own), got {self.pool_padding!r}")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))
            check(len(self.layers) >= 1, "layers must name at least one layer (or be None for the default)")


def _detector_sections(cls: type) -> type:
    """One field per registered detector, named as it and holding its settings (``ModelConfig.simplenet``,
    a ``SimpleNetConfig``), placed right after ``backbone``: so a new registry entry is a section of the model's
    config, its JSON and ``with_settings`` ("<name>.<setting>") with no line written here."""
    annotations: dict[str, Any] = {}
    for name, hint in cls.__dict__["__annotations__"].items():
        annotations[name] = hint
        if name == "backbone":
            for spec in REGISTRY.values():
                annotations[spec.name] = spec.config_class
                setattr(cls, spec.name, field(default_factory=spec.config_class))
    cls.__annotations__ = annotations
    return cls


@dataclass(frozen=True, kw_only=True)
@_detector_sections
class ModelConfig:
    """What is saved with a model: the backbone, the detector head and how an image is scored.

    ``tta``: test-time views (``TEST_VIEWS``, e.g. ``("hflip", "rot90")``): each image is also scored through
    these views, and the aligned patch maps averaged (iterative refinement's eq. 4), for parts that come in
    any orientation or light. The decision threshold is set from the training images scored the same way.
    Each view costs one more backbone pass per image. Empty: the image as it is.
    ``augment``: training views (same names): the features of each training image through these views
    join it side by side, so the memory and the head also learn the part flipped or rotated; leave-one-out
    still leaves the whole image, its views included, out. One more backbone pass per training image each.
    A backbone whose ``pool_padding`` is None gets the detector's own here (``DetectorSpec.pool_padding``),
    so the config, and a saved model's file, always name the features it was made with.
    """

    detector: Literal[DETECTORS] = DEFAULT_DETECTOR
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    # here, one settings section per registry entry, named after it (_detector_sections)
    blur_sigma: float = 4.0
    tta: tuple[str, ...] = ()
    augment: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check(self.detector in DETECTORS, f"detector must be one of {DETECTORS}, got {self.detector!r}")
        if self.backbone.pool_padding is None:  # the detector's own, written into the config (and its file)
            padding = REGISTRY[self.detector].pool_padding
            object.__setattr__(self, "backbone", dataclasses.replace(self.backbone, pool_padding=padding))
        check_at_least(self, blur_sigma=0)
        object.__setattr__(self, "tta", parse_views(self.tta, "tta"))
        object.__setattr__(self, "augment", parse_views(self.augment, "augment"))


@dataclass(frozen=True, kw_only=True)
class CoMetConfig:
    """The CoMet training strategy. Turn every part off (``CoMetConfig.baseline()``) for the plain baseline.

    - Soft Confident Learning (``soft_weights``): IQR threshold T = Q3 + k*IQR over the current per-image
      scores; weight min(1, (T - med) / (s - med)) above T (median-shifted), 1 below; recomputed every round
      after ``warmup_rounds``.
    - Iterative refinement (``refine``): samples above T get weight 0 for the next round.
    - Meta-learning (``meta``): Reptile over tasks drawn with probability proportional to weight.
    - Adaptive L2 (``adaptive_l2``): lambda = lambda0 * (1 + gamma * normalised det(Sigma)) over a window
      of (train, validation) losses.
    - Prior (``TrainConfig.prior``, ``TrainConfig.trust``): the memory's leave-one-out opinion gates which
      images and patches train the head (``TrustConfig``); ``prior_blend`` is the older blend mode's share.
    - ``loss_weights``: image weights multiply each image's loss as well as its sampling probability (off:
      sampling only, the earlier behaviour).
    """

    # the parts, each on or off
    soft_weights: bool = True
    refine: bool = False
    meta: bool = True
    adaptive_l2: bool = True
    # soft confident learning and refinement: the fence T = Q3 + iqr_k * IQR, from round warmup_rounds on
    iqr_k: float = 1.5
    warmup_rounds: int = 1
    # meta-learning (Reptile): tasks, their support share, inner steps, the outer step
    task_size: int = 16
    support_fraction: float = 0.5
    inner_steps: int = 3
    meta_step: float = 0.5
    # adaptive L2: lambda0, gamma, the loss window, the cap on lambda / lambda0
    l2_base: float = 1e-4
    l2_gamma: float = 10.0
    l2_window: int = 10
    l2_max_factor: float = 10.0
    # opinion & prior (the blend mode's share), and whether weights scale the loss
    prior_blend: float = 0.5
    loss_weights: bool = True

    def __post_init__(self) -> None:
        check_at_least(self, iqr_k=0, warmup_rounds=0, task_size=2)
        check(0 < self.support_fraction < 1, f"support_fraction must be in (0, 1), got {self.support_fraction!r}")
        check_at_least(self, inner_steps=1)
        check(0 < self.meta_step <= 1, f"meta_step must be in (0, 1], got {self.meta_step!r}")
        check(self.l2_base >= 0 and self.l2_gamma >= 0, "l2_base and l2_gamma must be >= 0")
        check_at_least(self, l2_window=3)
        check_range("prior_blend", self.prior_blend, 0.0, 1.0)

    @classmethod
    def baseline(cls) -> "CoMetConfig":
        """Plain training: every image weight 1, no meta-learning, fixed L2."""
        return cls(soft_weights=False, refine=False, meta=False, adaptive_l2=False)

    @classmethod
    def refinement(cls) -> "CoMetConfig":
        """Iterative refinement: hard IQR rejection each round, plain optimisation."""
        return cls(soft_weights=False, refine=True, meta=False, adaptive_l2=False)

    @property
    def weighting(self) -> bool:
        return self.soft_weights or self.refine


@dataclass(frozen=True, kw_only=True)
class TrustConfig:
    """The robust first opinion (``TrainConfig.prior = "memory"``): before any gradient step, an ensemble of
    ``n_memories`` sparse random patch memories (``fraction`` of the patches each, distances combined by
    ``aggregate``) scores every training image and patch leave-one-image-out, on the feature grid pooled by
    ``pool`` (2: 16x less work, the same ranking in our measurements).

    ``mode="gate"``: images above the image fence (``fence`` rule, ``k``) start with weight 0 and stay out
    unless the trained detector scores them ``comeback_z`` robust units below its median (strong evidence);
    with ``patch_weights``, patches above the patch fence (``patch_fence``, ``patch_k``, over the patches of
    the kept images) teach the head nothing, so a copied defect's patches are not learned even when the
    rest of its image is kept. ``teach_trusted_patches``: an image the fence put out still teaches the head
    its trusted patches (below the patch fence, the distrusted ones grown by ``patch_margin`` pooled patches),
    so a good but unusual image the fence caught is not lost, and a copied defect teaches only its normal
    parts. ``trim_rounds``: after the first pass, the memories are rebuilt from the images still in and every
    image re-scored (leave-one-out for those in), so copies of one defect stop vouching for each other.
    ``mode="blend"``: the earlier behaviour, weights from ``CoMetConfig.prior_blend`` * prior +
    (1 - prior_blend) * detector on a robust scale.
    """

    mode: Literal["gate", "blend"] = "gate"
    n_memories: int = 8
    fraction: float = 0.1
    aggregate: Literal["max", "mean"] = "mean"
    top_k: float = 0.05
    pool: int = 2
    fence: Literal["tukey", "mad", "lower"] = "lower"
    k: float = 3.0
    patch_weights: bool = False
    patch_fence: Literal["tukey", "mad", "lower"] = "lower"
    patch_k: float = 3.0
    teach_trusted_patches: bool = False
    patch_margin: int = 1
    trim_rounds: int = 0
    comeback_z: float = -0.5

    def __post_init__(self) -> None:
        check(self.mode in ("gate", "blend"), f"trust.mode must be 'gate' or 'blend', got {self.mode!r}")
        check(1 <= self.n_memories <= 64, f"trust.n_memories must be in [1, 64], got {self.n_memories!r}")
        check(0 < self.fraction <= 1, f"trust.fraction must be in (0, 1], got {self.fraction!r}")
        check(self.aggregate in ("max", "mean"), f"trust.aggregate must be 'max' or 'mean', got {self.aggregate!r}")
        check_range("trust.top_k", self.top_k, 0.0, 1.0)
        check(self.pool in (1, 2, 4), f"trust.pool must be 1, 2 or 4, got {self.pool!r}")
        check(self.fence in FENCES, f"trust.fence must be one of {FENCES}, got {self.fence!r}")
        check(self.patch_fence in FENCES, f"trust.patch_fence must be one of {FENCES}, got {self.patch_fence!r}")
        check(self.k >= 0 and self.patch_k >= 0, "trust.k and trust.patch_k must be >= 0")
        check(0 <= self.patch_margin <= 4, f"trust.patch_margin must be in [0, 4], got {self.patch_margin!r}")
        check(0 <= self.trim_rounds <= 5, f"trust.trim_rounds must be in [0, 5], got {self.trim_rounds!r}")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How long and on what to train. Nothing here looks at test labels."""

    rounds: int = 12
    steps_per_round: int = 20
    batch_size: int = 8
    comet: CoMetConfig = field(default_factory=CoMetConfig)
    prior: Literal["none", "memory"] = "memory"
    trust: TrustConfig = field(default_factory=TrustConfig)
    validation_fraction: float = 0.1
    device: str = "auto"
    seed: int = 0
    feature_batch_size: int = 16
    fp16_cache: bool = False

    def __post_init__(self) -> None:
        check_at_least(self, rounds=1, steps_per_round=1, batch_size=1)
        check(self.prior in ("none", "memory"), f"prior must be 'none' or 'memory', got {self.prior!r}")
        check(0 <= self.validation_fraction < 0.5,
               f"validation_fraction must be in [0, 0.5), got {self.validation_fraction!r}")
        check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
               f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        check(self.feature_batch_size >= 1, "feature_batch_size must be >= 1")


def _sections(cls: type) -> dict[str, type]:
    """The fields of ``cls`` that are config dataclasses themselves (ModelConfig.flow, TrainConfig.comet, ...),
    read from its type hints: a new settings class is a section as soon as it is a field."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)
            if isinstance(hints[f.name], type) and dataclasses.is_dataclass(hints[f.name])}


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a config; unknown keys are an error that names them (an older or newer file). A key missing
    from an older file takes the value that file was made with (the class's ``LEGACY``), else the default."""
    data = {**getattr(cls, "LEGACY", {}), **data}
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {unknown}; this file was written by a different "
                         f"version of comet-studio (known keys: {sorted(names)})")
    sections = _sections(cls)
    kwargs = {}
    for key, value in data.items():
        if key in sections and isinstance(value, dict):
            value = config_from_dict(sections[key], value)
        elif key == "layers" and value is not None:
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def with_settings(config: Any, settings: dict[str, Any]) -> Any:
    """A copy of ``config`` with dotted settings applied, e.g. ``{"flow.n_blocks": 8, "top_k": 0.02}``.

    Every value is checked by the config's own validation; an unknown section or key is a ValueError
    that lists the known ones."""
    data = config_to_dict(config)
    for dotted, value in settings.items():
        *sections, key = dotted.split(".")
        node, where = data, type(config).__name__
        for section in sections:
            if not isinstance(node.get(section), dict):
                known = sorted(k for k, v in node.items() if isinstance(v, dict))
                raise ValueError(f"{dotted!r}: {where} has no section {section!r} (sections: {known})")
            node, where = node[section], f"{where}.{section}"
        if key not in node or isinstance(node[key], dict):
            known = sorted(k for k, v in node.items() if not isinstance(v, dict))
            raise ValueError(f"{dotted!r}: {where} has no setting {key!r} (settings: {known})")
        node[key] = value
    return config_from_dict(type(config), data)

