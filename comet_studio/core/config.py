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
from typing import Any, Literal

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
DETECTORS = ("simplenet", "flow", "memory", "patchcore")
# Test-time views (data/views.py): geometric ones first, then photometric ones.
TEST_VIEWS = ("hflip", "vflip", "rot90", "rot180", "rot270", "brighter", "darker", "contrast")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _check_range(name: str, value: float, low: float, high: float) -> None:
    _check(low <= value <= high, f"{name} must be in [{low}, {high}], got {value!r}")


def parse_views(value: str | Sequence[str], name: str = "views") -> tuple[str, ...]:
    """Checked view names (``TEST_VIEWS``) from a JSON list, a tuple or the CLI's "hflip,rot90" alike;
    ``name`` (the setting) leads the message of an unknown or repeated view."""
    views = tuple(v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip())
    for view in views:
        _check(view in TEST_VIEWS, f"{name}: unknown view {view!r}; choose from {', '.join(TEST_VIEWS)}")
    _check(len(set(views)) == len(views), f"{name}: views repeat: {list(views)}")
    return views


def _check_at_least(config: Any, **lowest: float) -> None:
    """Each named field of ``config`` is at least its value, checked in the order given."""
    for name, low in lowest.items():
        value = getattr(config, name)
        _check(value >= low, f"{name} must be >= {low}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class BackboneConfig:
    """Frozen pretrained feature extractor.

    ``layers`` are backbone-specific names; ``None`` picks the backbone's default pair (one stride-8 and one
    stride-16 stage, as SimpleNet/PatchCore use layer2+layer3 of a ResNet). ``feature_dim`` caps the patch
    feature size by adaptive average pooling over channels (PatchCore's projection); smaller features are kept.
    """

    name: str = "efficientnet-lite0"
    layers: tuple[str, ...] | None = None
    image_size: int = 256
    patch_size: int = 3
    feature_dim: int = 384

    def __post_init__(self) -> None:
        _check(self.name in BACKBONES, f"backbone must be one of {BACKBONES}, got {self.name!r}")
        _check(32 <= self.image_size <= 2048 and self.image_size % 32 == 0,
               f"image_size must be a multiple of 32 in [32, 2048], got {self.image_size!r}")
        _check(self.patch_size in (1, 3, 5, 7), f"patch_size must be 1, 3, 5 or 7, got {self.patch_size!r}")
        _check_at_least(self, feature_dim=8)
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))
            _check(len(self.layers) >= 1, "layers must name at least one layer (or be None for the default)")


@dataclass(frozen=True, kw_only=True)
class SimpleNetConfig:
    """Feature adaptor + discriminator trained against Gaussian-noised features.

    ``noise_std`` is in units of the training features' per-channel standard deviation: features are
    standardised before the adaptor, so the noise scales with the features' spread whatever the backbone.
    A wide noise (1.0) makes the discriminator learn where patches are common rather than draw a tight
    boundary around every training patch, so a rare (defective) training patch is not memorised as normal.
    ``train_patches``: a random subset of each image's patches per training step (0 = all): 4x less work at
    256 px with the same expected gradient.
    """

    hidden_dim: int = 1024
    noise_std: float = 1.0
    margin: float = 0.5
    learning_rate: float = 2e-4
    top_k: float = 0.01
    train_patches: int = 256

    def __post_init__(self) -> None:
        _check_at_least(self, hidden_dim=8)
        _check(self.train_patches >= 0, f"train_patches must be >= 0 (0 = all), got {self.train_patches!r}")
        _check(self.noise_std > 0, f"noise_std must be > 0, got {self.noise_std!r}")
        _check_at_least(self, margin=0)
        _check(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate!r}")
        _check_range("top_k", self.top_k, 0.0, 1.0)


@dataclass(frozen=True, kw_only=True)
class FlowConfig:
    """FrEIA normalizing flow on the patch features (conv subnets, AllInOneBlock couplings)."""

    n_blocks: int = 4
    hidden_ratio: float = 1.0
    kernel_size: int = 3
    clamp: float = 2.0
    learning_rate: float = 1e-3
    top_k: float = 0.01

    def __post_init__(self) -> None:
        _check(1 <= self.n_blocks <= 32, f"n_blocks must be in [1, 32], got {self.n_blocks!r}")
        _check(self.hidden_ratio > 0, f"hidden_ratio must be > 0, got {self.hidden_ratio!r}")
        _check(self.kernel_size in (1, 3, 5), f"kernel_size must be 1, 3 or 5, got {self.kernel_size!r}")
        _check(self.clamp > 0, f"clamp must be > 0, got {self.clamp!r}")
        _check(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate!r}")
        _check_range("top_k", self.top_k, 0.0, 1.0)


@dataclass(frozen=True, kw_only=True)
class MemoryConfig:
    """Ensemble of sparse random patch memories; a patch's score is its nearest-neighbour distance to each
    memory, combined over the memories by ``aggregate``.

    ``"max"`` (default): a patch is normal only if every memory holds a close neighbour. A defect copied
    into the training folder is kept by only some memories, so its twins still score high; on cookies at
    128 px with 20% planted copies, image AUROC 0.94 vs 0.85 for ``"mean"`` (MeDS's average), and 0.953
    vs 0.962 with no contamination.

    ``candidates``: on a CPU with native bfloat16, each query's nearest patch is found among a bfloat16
    shortlist of this many, measured exactly in float32 (3-4x faster, the same distances in our
    measurements); 0 = always the exact float32 search. ``query_stride`` 2: on a CPU, score the patches of
    every other row and column, then the neighbourhoods of the ``refine`` fraction of highest ones exactly
    (the image score is the exact one in nearly every image, at a third of the work); 1 = every patch.
    ``probe`` < 1: on a CPU, each memory is split by seeded k-means into clusters of ~200 patches and a
    query is measured exactly against the ``probe`` fraction of clusters nearest to it, nothing else
    (``clustered_search``: ~8x less arithmetic at 1/8, image scores within 2e-3 relative (median) on
    magnetic tile); 1 = search every stored patch. A GPU, and an exported graph, always score every patch exactly.

    ``top_k``: the image score is the mean of the highest 5% of patch scores. A random memory misses some rare
    normal patches, so the single worst patch is often a good one; averaging over 5% rather than 1% raised
    image AUROC on all three development sets (README, "The memory's image score").
    """

    n_memories: int = 8
    fraction: float = 0.1
    max_patches: int = 50_000
    fp16: bool = False
    top_k: float = 0.05
    aggregate: Literal["max", "mean"] = "max"
    candidates: int = 4
    query_stride: int = 2
    refine: float = 0.05
    probe: float = 0.125

    def __post_init__(self) -> None:
        _check(0 < self.probe <= 1, f"probe must be in (0, 1] (1 = search every stored patch), got {self.probe!r}")
        _check(self.query_stride in (1, 2, 3), f"query_stride must be 1, 2 or 3, got {self.query_stride!r}")
        _check_range("refine", self.refine, 0.0, 1.0)
        _check(1 <= self.n_memories <= 64, f"n_memories must be in [1, 64], got {self.n_memories!r}")
        _check(0 <= self.candidates <= 64, f"candidates must be in [0, 64] (0 = exact search), got {self.candidates!r}")
        _check(self.aggregate in ("max", "mean"), f"aggregate must be 'max' or 'mean', got {self.aggregate!r}")
        _check(0 < self.fraction <= 1, f"fraction must be in (0, 1], got {self.fraction!r}")
        _check_at_least(self, max_patches=16)
        _check_range("top_k", self.top_k, 0.0, 1.0)


@dataclass(frozen=True, kw_only=True)
class PatchCoreConfig:
    """PatchCore baseline: one memory, a greedy k-center coreset of ``fraction`` of the training patches,
    selected on a seeded random projection to ``projection_dim`` dimensions."""

    fraction: float = 0.1
    projection_dim: int = 128
    max_patches: int = 50_000
    fp16: bool = False
    top_k: float = 0.01

    def __post_init__(self) -> None:
        _check(0 < self.fraction <= 1, f"fraction must be in (0, 1], got {self.fraction!r}")
        _check_at_least(self, projection_dim=8, max_patches=16)
        _check_range("top_k", self.top_k, 0.0, 1.0)


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """What is saved with a model: the backbone, the detector head and how an image is scored.

    ``tta``: test-time views (``TEST_VIEWS``, e.g. ``("hflip", "rot90")``): each image is also scored through
    these views, and the aligned patch maps averaged (iterative refinement's eq. 4), for parts that come in
    any orientation or light. The decision threshold is set from the training images scored the same way.
    Each view costs one more backbone pass per image. Empty: the image as it is.
    ``augment``: training views (same names): the features of each training image through these views
    join it side by side, so the memory and the head also learn the part flipped or rotated; leave-one-out
    still leaves the whole image, its views included, out. One more backbone pass per training image each.
    """

    detector: Literal["simplenet", "flow", "memory", "patchcore"] = "simplenet"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    simplenet: SimpleNetConfig = field(default_factory=SimpleNetConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    patchcore: PatchCoreConfig = field(default_factory=PatchCoreConfig)
    blur_sigma: float = 4.0
    tta: tuple[str, ...] = ()
    augment: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check(self.detector in DETECTORS, f"detector must be one of {DETECTORS}, got {self.detector!r}")
        _check_at_least(self, blur_sigma=0)
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
        _check_at_least(self, iqr_k=0, warmup_rounds=0, task_size=2)
        _check(0 < self.support_fraction < 1, f"support_fraction must be in (0, 1), got {self.support_fraction!r}")
        _check_at_least(self, inner_steps=1)
        _check(0 < self.meta_step <= 1, f"meta_step must be in (0, 1], got {self.meta_step!r}")
        _check(self.l2_base >= 0 and self.l2_gamma >= 0, "l2_base and l2_gamma must be >= 0")
        _check_at_least(self, l2_window=3)
        _check_range("prior_blend", self.prior_blend, 0.0, 1.0)

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
        _check(self.mode in ("gate", "blend"), f"trust.mode must be 'gate' or 'blend', got {self.mode!r}")
        _check(1 <= self.n_memories <= 64, f"trust.n_memories must be in [1, 64], got {self.n_memories!r}")
        _check(0 < self.fraction <= 1, f"trust.fraction must be in (0, 1], got {self.fraction!r}")
        _check(self.aggregate in ("max", "mean"), f"trust.aggregate must be 'max' or 'mean', got {self.aggregate!r}")
        _check_range("trust.top_k", self.top_k, 0.0, 1.0)
        _check(self.pool in (1, 2, 4), f"trust.pool must be 1, 2 or 4, got {self.pool!r}")
        _check(self.fence in FENCES, f"trust.fence must be one of {FENCES}, got {self.fence!r}")
        _check(self.patch_fence in FENCES, f"trust.patch_fence must be one of {FENCES}, got {self.patch_fence!r}")
        _check(self.k >= 0 and self.patch_k >= 0, "trust.k and trust.patch_k must be >= 0")
        _check(0 <= self.patch_margin <= 4, f"trust.patch_margin must be in [0, 4], got {self.patch_margin!r}")
        _check(0 <= self.trim_rounds <= 5, f"trust.trim_rounds must be in [0, 5], got {self.trim_rounds!r}")


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
        _check_at_least(self, rounds=1, steps_per_round=1, batch_size=1)
        _check(self.prior in ("none", "memory"), f"prior must be 'none' or 'memory', got {self.prior!r}")
        _check(0 <= self.validation_fraction < 0.5,
               f"validation_fraction must be in [0, 0.5), got {self.validation_fraction!r}")
        _check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
               f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        _check(self.feature_batch_size >= 1, "feature_batch_size must be >= 1")


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
    """Rebuild a config; unknown keys are an error that names them (an older or newer file)."""
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

