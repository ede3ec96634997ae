"""The FID Inception-v3: TensorFlow's ``inception-2015-12-05`` graph, as pytorch-fid and torch-fidelity
port it, written here without torchvision.

It loads their published state dict ``pt_inception-2015-12-05-6726825d.pth`` (both projects
publish the same file; ``WEIGHTS_SHA256``) by its key names, and gives the three heads the
standard protocols read:

* ``pool3`` (N, 2048): the graph's ``pool_3`` -- FID, KID, precision/recall;
* ``spatial`` (N, 2023): the graph's ``mixed_6/conv`` (the first unit of the 17x17 block
  ``mixed_6``, i.e. ``Mixed_6d.branch1x1`` in the ports' names, after its ReLU), first 7 of its 192
  channels, flattened in NHWC order like the ADM evaluator's ``spatial[..., :7].reshape(N, -1)`` --
  sFID;
* ``logits`` (N, 1008): ``pool3 @ fc.weight.T`` without the bias, the graph's
  ``softmax/logits/MatMul`` that the ADM evaluator and torch-fidelity's Inception Score use.

Where the graph differs from torchvision's Inception-v3 (what the ports patch): 1008 classes; the
3x3 average pools inside the A, C and first E blocks leave the zero padding out of the mean; the
last E block pools with max, not average.

Preprocessing (``preprocess``) is the graph's own, as torch-fidelity reproduces it: TF1's bilinear
resize to 299x299 with ``align_corners=False`` and no half-pixel centres (source coordinate =
``dst * in / out``), then ``(x - 128) / 128``, so 0..255 maps to [-1, 127/128]. pytorch-fid instead
resizes with ``F.interpolate(bilinear, align_corners=False)`` (half-pixel centres) and maps
``x / 255`` to ``2x - 1``; docs/fid.md gives the difference that makes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "WEIGHTS_FILE",
    "WEIGHTS_URL",
    "WEIGHTS_SHA256",
    "RESOLUTION",
    "SPATIAL_CHANNELS",
    "FIDInceptionV3",
    "preprocess",
    "tf1_resize_bilinear",
    "load_weights",
    "file_sha256",
    "cached_weights_path",
    "download_weights",
]

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILE}"
# sha256 of that file (its first 8 hex digits are the prefix torch.hub checks in the file name);
# torch-fidelity's weights-inception-2015-12-05-6726825d.pth has the same bytes.
WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
RESOLUTION = 299
SPATIAL_CHANNELS = 7  # of mixed_6/conv's 192: 7 * 17 * 17 = 2023 dims, close to pool3's 2048
NUM_CLASSES = 1008


class _FrozenBN(nn.Module):
    """Inference-only batch norm (TF's epsilon 1e-3). Buffers, not parameters, and no
    ``num_batches_tracked``: the published file holds exactly weight, bias, running_mean, running_var."""

    def __init__(self, channels: int):
        super().__init__()
        for name in ("weight", "bias", "running_mean", "running_var"):
            self.register_buffer(name, torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, 1e-3)


class _Unit(nn.Module):
    """conv (no bias) -> batch norm -> ReLU; ``conv`` / ``bn`` as the ports name them."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = _FrozenBN(cout)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: Tensor) -> Tensor:
    # TF's SAME average pool divides by the in-image count at the borders (padding left out).
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def _row(c: int, cout: int) -> _Unit:  # 1x7
    return _Unit(c, cout, (1, 7), padding=(0, 3))


def _col(c: int, cout: int) -> _Unit:  # 7x1
    return _Unit(c, cout, (7, 1), padding=(3, 0))


class _BlockA(nn.Module):
    """35x35 block (mixed, mixed_1, mixed_2): 64 + 64 + 96 + pool_features channels."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = _Unit(cin, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = _Unit(cin, 48, 1), _Unit(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _Unit(cin, 64, 1)
        self.branch3x3dbl_2, self.branch3x3dbl_3 = _Unit(64, 96, 3, padding=1), _Unit(96, 96, 3, padding=1)
        self.branch_pool = _Unit(cin, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_tf_avg_pool(x)),
        ], 1)


class _BlockB(nn.Module):
    """35x35 -> 17x17 reduction (mixed_3): 384 + 96 + 288 = 768 channels."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = _Unit(cin, 384, 3, stride=2)
        self.branch3x3dbl_1, self.branch3x3dbl_2 = _Unit(cin, 64, 1), _Unit(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Unit(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class _BlockC(nn.Module):
    """17x17 block with factorised 7x7 convs (mixed_4 .. mixed_7): 4 x 192 = 768 channels."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = _Unit(cin, 192, 1)
        self.branch7x7_1, self.branch7x7_2, self.branch7x7_3 = _Unit(cin, c7, 1), _row(c7, c7), _col(c7, 192)
        self.branch7x7dbl_1, self.branch7x7dbl_2 = _Unit(cin, c7, 1), _col(c7, c7)
        self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5 = _row(c7, c7), _col(c7, c7), _row(c7, 192)
        self.branch_pool = _Unit(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        dbl = self.branch7x7dbl_3(self.branch7x7dbl_2(self.branch7x7dbl_1(x)))
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            self.branch7x7dbl_5(self.branch7x7dbl_4(dbl)),
            self.branch_pool(_tf_avg_pool(x)),
        ], 1)


class _BlockD(nn.Module):
    """17x17 -> 8x8 reduction (mixed_8): 320 + 192 + 768 = 1280 channels."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = _Unit(cin, 192, 1), _Unit(192, 320, 3, stride=2)
        self.branch7x7x3_1, self.branch7x7x3_2 = _Unit(cin, 192, 1), _row(192, 192)
        self.branch7x7x3_3, self.branch7x7x3_4 = _col(192, 192), _Unit(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        seven = self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x)))
        return torch.cat([
            self.branch3x3_2(self.branch3x3_1(x)),
            self.branch7x7x3_4(seven),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class _BlockE(nn.Module):
    """8x8 block with split 3x3 convs (mixed_9, mixed_10): 320 + 768 + 768 + 192 = 2048 channels.
    ``max_pool``: the graph's last block pools with max (the ports' FIDInceptionE_2), the first with
    a padding-excluding average."""

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _Unit(cin, 320, 1)
        self.branch3x3_1 = _Unit(cin, 384, 1)
        self.branch3x3_2a, self.branch3x3_2b = _Unit(384, 384, (1, 3), padding=(0, 1)), _Unit(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1, self.branch3x3dbl_2 = _Unit(cin, 448, 1), _Unit(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _Unit(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _Unit(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _Unit(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_1(x)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(b3), self.branch3x3_2b(b3),
            self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl),
            self.branch_pool(pooled),
        ], 1)


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3 with the ports' module names (so their state dict loads strictly)."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = _Unit(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _Unit(32, 32, 3)
        self.Conv2d_2b_3x3 = _Unit(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _Unit(64, 80, 1)
        self.Conv2d_4a_3x3 = _Unit(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = _BlockA(192, 32), _BlockA(256, 64), _BlockA(288, 64)
        self.Mixed_6a = _BlockB(288)
        self.Mixed_6b, self.Mixed_6c = _BlockC(768, 128), _BlockC(768, 160)
        self.Mixed_6d, self.Mixed_6e = _BlockC(768, 160), _BlockC(768, 192)
        self.Mixed_7a = _BlockD(768)
        self.Mixed_7b, self.Mixed_7c = _BlockE(1280, max_pool=False), _BlockE(2048, max_pool=True)
        self.fc = nn.Linear(2048, NUM_CLASSES)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x: (N, 3, 299, 299) from ``preprocess`` -> pool3 (N, 2048), spatial (N, 2023), logits (N, 1008)."""
        h = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (N, 64, 147, 147)
        h = F.max_pool2d(h, 3, stride=2)  # (N, 64, 73, 73)
        h = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(h)), 3, stride=2)  # (N, 192, 35, 35)
        h = self.Mixed_6a(self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(h))))  # (N, 768, 17, 17)
        h = self.Mixed_6c(self.Mixed_6b(h))
        # mixed_6/conv: the first unit of Mixed_6d, on that block's input (N, 192, 17, 17)
        spatial = self.Mixed_6d.branch1x1(h)[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).flatten(1)
        h = self.Mixed_7a(self.Mixed_6e(self.Mixed_6d(h)))  # (N, 1280, 8, 8)
        pool3 = self.Mixed_7c(self.Mixed_7b(h)).mean(dim=(2, 3))  # (N, 2048)
        return pool3, spatial, pool3 @ self.fc.weight.T


def tf1_resize_bilinear(x: Tensor, size: int) -> Tensor:
    """TF1 ``ResizeBilinear(align_corners=False)``: output pixel i samples input coordinate
    ``i * in / out`` (no half-pixel offset), clamped at the last row/column. x: (N, C, H, W) float."""

    def taps(n_in: int) -> tuple[Tensor, Tensor, Tensor]:
        src = torch.arange(size, dtype=torch.float32, device=x.device) * (n_in / size)
        lo = src.floor()
        return lo.long(), (lo.long() + 1).clamp_max(n_in - 1), (src - lo).to(x.dtype)

    y0, y1, wy = taps(x.shape[-2])
    x0, x1, wx = taps(x.shape[-1])
    # TF's order: interpolate along the row first, then between the two rows (round-off follows it)
    top, bottom = x[..., y0, :], x[..., y1, :]  # (N, C, size, W)
    top = top[..., x0] + (top[..., x1] - top[..., x0]) * wx
    bottom = bottom[..., x0] + (bottom[..., x1] - bottom[..., x0]) * wx  # (N, C, size, size)
    return top + (bottom - top) * wy[:, None]


def preprocess(images: Tensor) -> Tensor:
    """uint8 or [0, 255] float (N, 3, H, W) -> (N, 3, 299, 299) float32 as the graph sees it."""
    x = images.float()
    if x.shape[-2:] != (RESOLUTION, RESOLUTION):
        x = tf1_resize_bilinear(x, RESOLUTION)
    return (x - 128.0) / 128.0


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def load_weights(path: str | os.PathLike, *, expected_sha256: str | None = WEIGHTS_SHA256) -> FIDInceptionV3:
    """The network with the state dict in ``path`` (tensors only: ``weights_only=True``).

    With ``expected_sha256`` (the published file's, by default) a file of other bytes is refused;
    pass None for a file of other weights in the same layout (tests, the upstream comparison).
    ``num_batches_tracked`` entries, which a re-saved torchvision-built copy gains, are ignored."""
    if expected_sha256 is not None and (actual := file_sha256(path)) != expected_sha256:
        raise ValueError(f"{path}: sha256 {actual[:16]}... is not the published FID Inception weights' "
                         f"{expected_sha256[:16]}...; it is not pt_inception-2015-12-05-6726825d.pth")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, ValueError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable PyTorch state-dict file ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a state dict")
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    model = FIDInceptionV3()
    ours = model.state_dict()
    missing, extra = sorted(set(ours) - set(state)), sorted(set(state) - set(ours))
    wrong = [k for k in ours if k in state and tuple(state[k].shape) != tuple(ours[k].shape)]
    if missing or extra or wrong:
        first = (missing and f"missing {missing[0]}") or (extra and f"unexpected {extra[0]}") or \
            f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}, not {tuple(ours[wrong[0]].shape)}"
        raise ValueError(f"{path}: not the FID Inception state dict ({len(missing)} missing, {len(extra)} "
                         f"unexpected, {len(wrong)} mis-shaped keys; {first})")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.eval().requires_grad_(False)


def cached_weights_path(cache: str | os.PathLike) -> Path:
    """Where ``pixdiff eval --download-weights`` keeps the file inside pixdiff's cache home."""
    return Path(cache) / "weights" / WEIGHTS_FILE


def download_weights(cache: str | os.PathLike) -> Path:
    """Fetch ``WEIGHTS_URL`` into the cache (only on the user's explicit request), verify its sha256,
    and move it into place; a file already there with the right hash is reused."""
    import tempfile
    import urllib.request

    dest = cached_weights_path(cache)
    if dest.is_file() and file_sha256(dest) == WEIGHTS_SHA256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".download-")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(WEIGHTS_URL, timeout=60) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
        if (actual := file_sha256(tmp)) != WEIGHTS_SHA256:
            raise ValueError(f"downloaded {WEIGHTS_URL} has sha256 {actual[:16]}..., not the published "
                             f"{WEIGHTS_SHA256[:16]}...; nothing was kept")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
