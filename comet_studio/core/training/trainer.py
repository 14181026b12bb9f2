"""The CoMet trainer: model-agnostic confident meta-learning over cached features.

``CoMetTrainer.fit`` checks its inputs, puts the memory's opinion in charge when the config says so, and
hands over to one of two loops: ``round_loop.fit_rounds`` for trained heads (weighted training, held-out
model selection in ``selection.py``, re-weighting in ``round_weights.py``) and
``training_free.fit_training_free`` for patch memories. Model selection uses only a held-out split of the
training images (their self-supervised loss), never test labels. Randomness comes only from generators
seeded with ``TrainConfig.seed``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import TrainConfig
from ..detectors.base import DetectorHead
from .control import TrainingControl
from .opinion import MemoryOpinion
from .result import FitResult
from .round_loop import fit_rounds
from .round_weights import OpinionGate
from .state import TrainerState
from .training_free import fit_training_free
from .weighting import Override

__all__ = ["CoMetTrainer"]


class CoMetTrainer:
    """Trains any ``DetectorHead`` on cached features with the CoMet strategy in ``config.comet``."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    def fit(
        self,
        head: DetectorHead,
        features: torch.Tensor,
        *,
        device: torch.device,
        overrides: dict[int, Override] | None = None,
        prior_scores: np.ndarray | None = None,
        opinion: MemoryOpinion | None = None,
        resume: TrainerState | None = None,
        control: TrainingControl | None = None,
    ) -> FitResult:
        """Train ``head`` for ``config.rounds`` rounds. ``control`` carries progress, the stop event and the
        per-round hooks (``TrainingControl``); its ``on_state`` receives a ``TrainerState`` after every
        completed round (trained heads only), and passing one back as ``resume`` (same head, features and
        config) continues after that round exactly as if training had never stopped.

        ``opinion`` (the memory's leave-one-out opinion, ``opinion.py``) or bare ``prior_scores``: with
        ``config.trust.mode == "gate"`` the images above the opinion's fence start (and stay) out unless the
        detector clears them, and the opinion's patch weights scale each patch's loss; with "blend", the
        earlier robust-scale blend of image scores."""
        control = control or TrainingControl()
        n = len(features)
        overrides = dict(overrides or {})
        if opinion is not None:
            if len(opinion) != n:
                raise ValueError(f"the opinion covers {len(opinion)} images, but {n} training images were given")
            prior_scores = opinion.image_scores
        if prior_scores is not None and len(prior_scores) != n:
            raise ValueError(f"prior_scores has {len(prior_scores)} entries for {n} training images")
        gate = OpinionGate.build(prior_scores, opinion, self.config, tuple(features.shape[2:]))
        head.to(device)
        if not head.trainable:
            return fit_training_free(head, features, self.config, device=device, overrides=overrides, gate=gate,
                                     control=control)
        return fit_rounds(head, features, self.config, device=device, overrides=overrides,
                          prior_scores=prior_scores, gate=gate, resume=resume, control=control)
