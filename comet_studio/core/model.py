"""``AnomalyModel``: the estimator. Configure, ``fit`` on unlabelled images, ``predict``, ``save``, ``load``."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._version import __version__
from .config import ModelConfig, TrainConfig, config_from_dict, config_to_dict
from .detectors import build_head
from .detectors.memory import memory_prior_scores
from .features import FeatureExtractor, extract_features, resolve_device
from .detectors.inference import InferenceModel, Scores, mean_of_views
from .io.checkpoint import CheckpointError, read_checkpoint, write_checkpoint
from .detectors.postprocess import PostProcessor
from .progress import Progress
from .io.quiet import quiet_stdout
from .training import CoMetTrainer, FitResult, RoundEvent, TrainingControl
from .training.opinion import memory_opinion
from .training.state import TrainerState
from .training.view_calibration import view_threshold
from .training.weighting import Override

__all__ = ["AnomalyModel", "NotFittedError", "Prediction"]

ImageItem = str | Path | np.ndarray


class NotFittedError(RuntimeError):
    """``predict``/``save`` before ``fit`` or ``load``."""


@dataclass(frozen=True)
class Prediction:
    """Per-image results as numpy arrays, named like ``Scores`` (and the exported graph's outputs): normalised
    score (threshold 0.5), label, heatmap at model resolution, raw score."""

    image_score: np.ndarray  # (N,) float64, higher = more anomalous
    pred_label: np.ndarray  # (N,) bool, image_score > 0.5
    anomaly_map: np.ndarray  # (N, S, S) float32, normalised like the scores
    raw_score: np.ndarray  # (N,) float64, the head's own scale


def _quiet_extractor(config) -> FeatureExtractor:
    # The EfficientNet package prints "Loaded pretrained weights" on every build.
    with quiet_stdout():
        return FeatureExtractor(config)


class AnomalyModel:
    """A frozen backbone + a detector head trained with CoMet on an uncurated image set.

    >>> model = AnomalyModel(ModelConfig(), train=TrainConfig(rounds=8)).fit(paths)
    >>> model.predict(test_paths).image_score  # 0.5 = decision threshold, higher = more anomalous

    Fitted attributes end in ``_``: ``result_`` (per-sample scores, weights, rejections, history),
    ``features_`` (the cached training features, reused by retraining with overrides), ``opinion_`` (the
    memory's leave-one-out ``MemoryOpinion`` that gated training, or None).
    """

    def __init__(self, config: ModelConfig | None = None, *, train: TrainConfig | None = None) -> None:
        self.config = config or ModelConfig()
        self.train_config = train or TrainConfig()

    # -- fitting -------------------------------------------------------------------------------------------
    def extract(self, images: Sequence[ImageItem], *, progress: Progress | None = None,
                stop: threading.Event | None = None, view: str | None = None) -> torch.Tensor:
        """Features of ``images`` with this model's frozen backbone (computed once; reuse them); ``view``:
        of the images seen through that test-time view (``config.TEST_VIEWS``)."""
        extractor = self._extractor()
        stage = "features" if view is None else f"features ({view})"
        report = (lambda done, total: progress(stage, done, total)) if progress else None
        return extract_features(extractor, images, device=self.device_, batch_size=self.train_config.feature_batch_size,
                                fp16=self.train_config.fp16_cache, progress=report, stop=stop, view=view)

    def extract_views(self, images: Sequence[ImageItem], *, progress: Progress | None = None) -> list[torch.Tensor]:
        """What ``predict_features`` takes: the features of ``images`` as they are, then through each of the
        model's test-time views (``ModelConfig.tta``), in that order."""
        return [self.extract(images, progress=progress, view=view) for view in (None, *self.config.tta)]

    def fit(
        self,
        images: Sequence[ImageItem],
        *,
        features: torch.Tensor | None = None,
        overrides: dict[int, Override] | None = None,
        prior_scores: np.ndarray | None = None,
        callback: Callable[[RoundEvent], None] | None = None,
        progress: Progress | None = None,
        stop: threading.Event | None = None,
        resume: TrainerState | None = None,
        on_state: Callable[[TrainerState], None] | None = None,
    ) -> "AnomalyModel":
        """Train on ``images`` (paths or RGB arrays). ``features`` skips extraction when already cached;
        ``overrides`` maps an image index to "good" (weight 1) or "exclude" (weight 0). ``callback`` (each
        ``RoundEvent``), ``progress``, ``stop`` and ``on_state`` reach the trainer as one ``TrainingControl``.
        ``on_state`` /
        ``resume``: the trainer state after each completed round, and one to continue from
        (see ``CoMetTrainer.fit``). ``prior_scores``: per-image contamination scores for the first weights;
        when omitted and ``TrainConfig.prior`` is "memory", they are computed here (on the training device)."""
        if len(images) < 2:
            raise ValueError(f"need at least 2 training images, got {len(images)}")
        control = TrainingControl(progress=progress, stop=stop, on_round=callback, on_state=on_state)
        seed = self.train_config.seed
        self.device_ = resolve_device(self.train_config.device)
        if features is None:
            features = self.extract(images, progress=progress, stop=stop)
        if len(features) != len(images):
            raise ValueError(f"features hold {len(features)} images but {len(images)} were given")
        train_features = self._augmented(images, features, control)
        opinion = None
        if prior_scores is None and self.train_config.prior == "memory" and self.train_config.comet.weighting:
            # The memory's leave-one-out opinion of these same features, before any gradient step.
            if self.train_config.trust.mode == "gate":
                opinion = memory_opinion(train_features, self.train_config.trust, seed=seed, device=self.device_,
                                         progress=control.stage("trust"))
            else:  # the earlier blend: image scores of the detector's own memory settings
                prior_scores = memory_prior_scores(train_features, self.config.memory, seed=seed, device=self.device_)
        self.opinion_ = opinion
        extractor = self._extractor()
        head = build_head(self.config, extractor.out_dim, extractor.grid,
                          generator=torch.Generator().manual_seed(seed))
        result = CoMetTrainer(self.train_config).fit(
            head, train_features, device=self.device_, overrides=overrides, prior_scores=prior_scores, opinion=opinion,
            resume=resume, control=control)
        threshold, median = result.threshold, result.median
        if self.config.tta or self.config.augment:  # scored otherwise than the trainer scored its images
            threshold, median = self._view_threshold(head, images, features, train_features, result, control)
        self.inference_ = self._inference(extractor, head, threshold, median)
        self.features_ = features
        self.result_: FitResult = result
        return self

    def with_head(self, head_state: dict[str, torch.Tensor], threshold: float, median: float) -> "AnomalyModel":
        """A fitted model sharing this one's backbone, with the given head weights and decision threshold:
        what a run folder saves after each round (``TrainerState.best_head``) while ``fit`` still runs."""
        extractor = self._extractor()
        head = build_head(self.config, extractor.out_dim, extractor.grid)
        head.load_state_dict(head_state, strict=True)
        model = type(self)(self.config, train=self.train_config)
        model.device_, model.extractor_ = self.device_, extractor
        model.inference_ = model._inference(extractor, head, threshold, median)
        return model

    def _augmented(self, images: Sequence[ImageItem], features: torch.Tensor,
                   control: TrainingControl) -> torch.Tensor:
        """The training features with each image's ``augment`` views beside it (along the width), so every
        head and the leave-one-out memories take them as more patches of the same image."""
        if not self.config.augment:
            return features
        views = [self.extract(images, view=view, progress=control.progress, stop=control.stop)
                 for view in self.config.augment]
        return torch.cat([features, *views], dim=3)

    def _view_threshold(self, head, images: Sequence[ImageItem], features: torch.Tensor,
                        train_features: torch.Tensor, result: FitResult,
                        control: TrainingControl) -> tuple[float, float]:
        """The threshold when the model scores images otherwise than the trainer did (test-time views, or
        training views the trainer saw side by side): the trusted training images scored as at test time."""
        members = ~np.asarray(result.rejected, dtype=bool) & (np.asarray(result.weights) > 0)
        views = self.config.tta
        width = features.shape[3]
        beside = {view: 1 + i for i, view in enumerate(self.config.augment)}  # its slot along the width

        def view_features(view: str | None) -> torch.Tensor:
            if view is None:
                return features
            if view in beside:  # a training view holds it already: read it, do not extract it again
                return train_features[..., beside[view] * width:(beside[view] + 1) * width]
            return self.extract(images, view=view, progress=control.progress, stop=control.stop)

        seen = (view_features(view) for view in (None, *views))
        return view_threshold(head, seen, views, members, fit_features=train_features,
                              k=self.train_config.comet.iqr_k, device=self.device_,
                              progress=control.stage("view threshold"))

    def _inference(self, extractor: FeatureExtractor, head, threshold: float, median: float) -> InferenceModel:
        post = PostProcessor()
        post.set(threshold, median)
        return InferenceModel(extractor, head, post, self.config.blur_sigma, self.config.tta).to(self.device_).eval()

    def _extractor(self) -> FeatureExtractor:
        cached = getattr(self, "extractor_", None)
        if cached is None or cached.config != self.config.backbone:
            self.device_ = getattr(self, "device_", None) or resolve_device(self.train_config.device)
            self.extractor_ = _quiet_extractor(self.config.backbone).to(self.device_)
        return self.extractor_

    # -- inference -----------------------------------------------------------------------------------------
    def _check_fitted(self) -> InferenceModel:
        model = getattr(self, "inference_", None)
        if model is None:
            raise NotFittedError("this AnomalyModel is not fitted: call fit(images) or AnomalyModel.load(run_dir)")
        return model

    @torch.no_grad()
    def predict_features(self, features: torch.Tensor | Sequence[torch.Tensor], batch_size: int = 32) -> Prediction:
        """Score cached features: one tensor (N, D, h, w) from ``extract``, or, for a model with test-time
        views, the list ``extract_views`` gives."""
        model = self._check_fitted()
        if isinstance(features, torch.Tensor):
            features = [features]
        if len(features) != len(model.views) + 1:
            raise ValueError(f"this model scores each image as it is and through {len(model.views)} test-time "
                             f"views {list(model.views)}, so it needs {len(model.views) + 1} feature tensors, got "
                             f"{len(features)}: pass model.extract_views(images), or call predict(images)")
        patches = [self._patch_scores(part, batch_size) for part in features]
        return self._from_patches(mean_of_views(patches, model.views), batch_size)

    @torch.no_grad()
    def predict(self, images: Sequence[ImageItem], *, batch_size: int = 16,
                progress: Progress | None = None) -> Prediction:
        """Score images (paths or RGB arrays), through the model's test-time views when it has them (one
        view's features held at a time)."""
        model = self._check_fitted()
        patches = [self._patch_scores(self.extract(images, progress=progress, view=view), batch_size)
                   for view in (None, *model.views)]
        return self._from_patches(mean_of_views(patches, model.views), batch_size)

    def _patch_scores(self, features: torch.Tensor, batch_size: int) -> torch.Tensor:
        head = self._check_fitted().head
        return torch.cat([head.patch_scores(features[i:i + batch_size].to(self.device_).float())
                          for i in range(0, len(features), batch_size)])

    def _from_patches(self, patches: torch.Tensor, batch_size: int) -> Prediction:
        model = self._check_fitted()
        return _to_prediction([model.scores_from_patches(patches[i:i + batch_size])
                               for i in range(0, len(patches), batch_size)])

    @property
    def threshold_(self) -> float:
        return float(self._check_fitted().post.threshold)

    # -- persistence ---------------------------------------------------------------------------------------
    def checkpoint(self) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, config) that ``save`` writes: head and post-processing only (the backbone is rebuilt
        from its pretrained package), plus the JSON-ready config. Exporters reuse it."""
        model = self._check_fitted()
        tensors = {f"head.{k}": v for k, v in model.head.state_dict().items()}
        tensors.update({f"post.{k}": v for k, v in model.post.state_dict().items()})
        meta = {"version": __version__, "model": config_to_dict(self.config),
                "feature_dim": model.extractor.out_dim, "grid": list(model.extractor.grid),
                "layers": list(model.extractor.layers), "threshold": float(model.post.threshold),
                "median": float(model.post.median), "normalisation": {"mean": list(model.extractor.backbone.mean),
                                                                      "std": list(model.extractor.backbone.std)}}
        return tensors, meta

    def save(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` + ``model.json`` (see ``checkpoint``), each atomically."""
        write_checkpoint(directory, *self.checkpoint())
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path, *, device: str = "auto") -> "AnomalyModel":
        """Load a model saved by ``save`` (a run folder or its ``model/`` folder) or a single ``.safetensors``
        file from ``export_model``. A checkpoint of another format version, backbone or shape raises
        ``CheckpointError`` saying why."""
        tensors, meta = read_checkpoint(directory)
        try:
            config = config_from_dict(ModelConfig, meta["model"])
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{directory}: model config cannot be read ({error})") from error
        self = cls(config, train=TrainConfig(device=device))
        self.device_ = resolve_device(device)
        extractor = self._extractor()
        found = (extractor.out_dim, list(extractor.grid), list(extractor.layers))
        saved = (meta.get("feature_dim"), meta.get("grid"), meta.get("layers"))
        if found != saved:
            raise CheckpointError(
                f"{directory}: saved for features of dim {saved[0]} on grid {saved[1]} from layers {saved[2]}, "
                f"but its config ({config.backbone.name}) gives dim {found[0]} on {found[1]} from {found[2]}; "
                f"the config was edited, or the checkpoint comes from a different comet-studio version")
        head = build_head(config, extractor.out_dim, extractor.grid)
        _load_state(head, tensors, "head.", directory)
        self.inference_ = self._inference(extractor, head, 0.0, -1.0)
        _load_state(self.inference_.post, tensors, "post.", directory)
        return self


def _load_state(module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str, directory) -> None:
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    # Data-sized buffers (a patch memory) may hold any size: the head resizes them and checks the rest.
    resizable = set(getattr(module, "data_sized_buffers", ()))
    wrong = sorted(k for k in set(expected) & set(state)
                   if expected[k].shape != state[k].shape and k not in resizable)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{directory}: checkpoint does not match its config ({prefix.rstrip('.')}): missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]}. It was written by a different version or "
            f"edited by hand; retrain it.")
    module.load_state_dict(state, strict=True)


def _to_prediction(parts: list[Scores]) -> Prediction:
    return Prediction(
        image_score=torch.cat([p.image_score for p in parts]).cpu().numpy().astype(np.float64),
        pred_label=torch.cat([p.pred_label for p in parts]).cpu().numpy(),
        anomaly_map=torch.cat([p.anomaly_map for p in parts]).cpu().numpy().astype(np.float32),
        raw_score=torch.cat([p.raw_score for p in parts]).cpu().numpy().astype(np.float64),
    )
