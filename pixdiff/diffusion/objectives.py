"""Training objectives: a forward (noising) process, a time distribution, a loss, and the
conversions from a network's output to velocity, x0 and eps.

Time convention (fixed across pixdiff): t in [0, 1], **t = 1 is data, t = 0 is pure noise**.
Every objective is a Gaussian path

    x_t = alpha(t) * x0 + sigma(t) * eps,        eps ~ N(0, I),

and differs only in (alpha, sigma), in how t is drawn in training, and in what the network
predicts. Writing all of them this way lets every solver run with every objective: a solver only
needs the velocity dx_t/dt = alpha'(t) x0 + sigma'(t) eps, plus (alpha, sigma) for DDIM-type
updates. Given x_t and any one of (velocity, x0, eps) the other two follow from that 2x2 system.

    FlowMatching  alpha = t, sigma = 1 - t; the network predicts the velocity x0 - eps.
    DDPM          discrete VP process (1000 steps); the network predicts eps.
    XPrediction   the flow-matching path with sigma = noise_scale (1 - t); the network predicts x0,
                  the loss is on velocity (JiT).
    FrequencyAwareFlowMatching  FlowMatching plus DeCo's JPEG-weighted 8x8 DCT loss on the velocity.
    MeanFlow      the flow-matching path; the network predicts the average velocity over an interval
                  [t, r] (Geng et al. 2025), trained with the JVP identity; r = t is flow matching.

Randomness: every function that draws noise takes `generator`, either one `torch.Generator` or a
list of B generators, one per sample (EDM style): with a list, sample i's draws come only from
generator i, so its result does not depend on the batch it is in. `randn`/`rand` implement that.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from pixdiff.config.validate import check_fields, positive, require

Generators = torch.Generator | Sequence[torch.Generator] | None
Model = Callable[[Tensor, Tensor, Tensor], Tensor]  # (x (B,C,H,W), t (B,), y (B,)) -> (B,C,H,W)
AverageVelocity = Callable[[Tensor, Tensor, Tensor], Tensor]  # (x_t (B,C,H,W), t (B,), r (B,)) -> u (B,C,H,W)


# ----------------------------------------------------------------------------- randomness
def randn(
    shape: Sequence[int], generator: Generators = None, *, device=None, dtype: torch.dtype | None = None
) -> Tensor:
    """N(0, 1) noise of `shape`; with a list of generators, row i is drawn from generator i only."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    _check_per_sample(shape, generator)
    return torch.stack([torch.randn(tuple(shape[1:]), generator=g, device=device, dtype=dtype) for g in generator])


def rand(
    shape: Sequence[int], generator: Generators = None, *, device=None, dtype: torch.dtype | None = None
) -> Tensor:
    """U[0, 1) draws of `shape`; with a list of generators, row i is drawn from generator i only."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.rand(tuple(shape), generator=generator, device=device, dtype=dtype)
    _check_per_sample(shape, generator)
    return torch.stack([torch.rand(tuple(shape[1:]), generator=g, device=device, dtype=dtype) for g in generator])


def _check_per_sample(shape: Sequence[int], generators: Sequence[torch.Generator]) -> None:
    if len(generators) != shape[0]:
        raise ValueError(f"got {len(generators)} generators for a batch of {shape[0]}; pass one per sample")


# ----------------------------------------------------------------------------- schedule math
class Coefficients(NamedTuple):
    """alpha(t), sigma(t) and their t-derivatives; each shaped like t, (B,)."""

    alpha: Tensor
    sigma: Tensor
    d_alpha: Tensor
    d_sigma: Tensor


class Prediction(NamedTuple):
    """What a network output implies at (x_t, t); each (B, C, H, W)."""

    velocity: Tensor  # dx_t/dt = alpha' x0 + sigma' eps
    x0: Tensor  # E[x0 | x_t] as the network sees it
    eps: Tensor  # E[eps | x_t]


class Schedule(Protocol):
    """The forward process x_t = alpha(t) x0 + sigma(t) eps; all a solver needs of an objective."""

    def coefficients(self, t: Tensor) -> Coefficients: ...


def _bcast(c: Tensor, x: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1) in x's dtype, to scale a (B, ...) tensor per sample."""
    return c.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


def broadcast_coefficients(schedule: Schedule, t: Tensor, x: Tensor) -> Coefficients:
    """schedule.coefficients(t) as (B, 1, ..., 1) tensors in x's dtype, to scale x (B, ...)."""
    return Coefficients(*(_bcast(c, x) for c in schedule.coefficients(t)))


def from_velocity(schedule: Schedule, v: Tensor, x_t: Tensor, t: Tensor) -> Prediction:
    """Solve [alpha sigma; alpha' sigma'] [x0; eps] = [x_t; v] for x0 and eps."""
    a, s, da, ds = broadcast_coefficients(schedule, t, x_t)
    det = a * ds - s * da  # -1 on the flow-matching path; -alpha'/sigma on a VP path
    return Prediction(v, (ds * x_t - s * v) / det, (a * v - da * x_t) / det)


def from_x0(schedule: Schedule, x0: Tensor, x_t: Tensor, t: Tensor) -> Prediction:
    """Singular where sigma = 0 (t = 1 on the flow-matching path)."""
    a, s, da, ds = broadcast_coefficients(schedule, t, x_t)
    eps = (x_t - a * x0) / s
    return Prediction(da * x0 + ds * eps, x0, eps)


def from_eps(schedule: Schedule, eps: Tensor, x_t: Tensor, t: Tensor) -> Prediction:
    """Singular where alpha = 0 (pure noise) or sigma' is infinite (t = 1 on a VP path)."""
    a, s, da, ds = broadcast_coefficients(schedule, t, x_t)
    x0 = (x_t - s * eps) / a
    return Prediction(da * x0 + ds * eps, x0, eps)


def time_shift(t: Tensor, shift: float) -> Tensor:
    """t / (t + (1 - t) * shift): a monotone bijection of [0, 1] fixing 0 and 1.

    With t = 1 as data, shift > 1 moves every t towards 0 (noise): the signal-to-noise ratio
    t/(1-t) is divided by `shift`, i.e. more training and sampling time at high noise, as SD3 and
    DiP use it for large images. shift < 1 moves t towards data; `time_shift(., 1/shift)` inverts.
    """
    return t / (t + (1 - t) * shift)


def drop_labels(y: Tensor, p: float, num_classes: int, generator: Generators = None) -> Tensor:
    """Replace each label by the null class `num_classes` with probability p (for CFG training)."""
    if p <= 0:
        return y
    drop = rand((y.shape[0],), generator, device=y.device) < p
    return torch.where(drop, torch.full_like(y, num_classes), y)


def _mse(out: Tensor, target: Tensor) -> Tensor:
    # autocast may hand back bf16 outputs: compare in the target's (data) precision
    return (out.to(target.dtype) - target).square().mean()


# ----------------------------------------------------------------------------- objectives
class Objective(Schedule, Protocol):
    """What the training loop and the samplers use. Implementations are frozen dataclasses."""

    label_dropout: float

    def sample_t(self, n: int, *, generator: Generators = None, device=None) -> Tensor: ...

    def target(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor: ...

    def predict(self, out: Tensor, x_t: Tensor, t: Tensor) -> Prediction: ...

    def loss(
        self, model: Model, x: Tensor, y: Tensor, *, num_classes: int,
        generator: Generators = None, t: Tensor | None = None, noise: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float | Tensor]]: ...


def _noised(
    objective: Objective, x: Tensor, generator: Generators, t: Tensor | None, noise: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Draws t (B,) and eps (B, C, H, W) unless given (in that order); returns (t, eps, x_t)."""
    if t is None:
        t = objective.sample_t(x.shape[0], generator=generator, device=x.device)
    eps = randn(x.shape, generator, device=x.device, dtype=x.dtype) if noise is None else noise
    a, s, _, _ = broadcast_coefficients(objective, t, x)
    return t, eps, a * x + s * eps


def _target_mse(
    objective: Objective, model: Model, x: Tensor, y: Tensor, num_classes: int,
    generator: Generators, t: Tensor | None, noise: Tensor | None,
) -> tuple[Tensor, dict[str, float | Tensor]]:
    """Plain MSE between the network output and `objective.target` (flow matching, DDPM)."""
    t, eps, x_t = _noised(objective, x, generator, t, noise)
    y = drop_labels(y, objective.label_dropout, num_classes, generator)
    loss = _mse(model(x_t, t, y), objective.target(x, eps, t))
    return loss, {"loss": loss.detach()}


@dataclass(frozen=True)
class _FlowPath:
    """The rectified-flow path alpha = t, sigma = 1 - t and its training-time distribution.

    t_sampling "logit_normal": t = sigmoid(N(loc, scale)); "uniform": t ~ U[0, 1). Then
    `time_shift(t, shift)` (shift > 1: more weight near noise). label_dropout: probability of
    training with the null class, which classifier-free guidance needs.
    """

    t_sampling: Literal["logit_normal", "uniform"] = "logit_normal"
    loc: float = 0.0
    scale: float = 1.0
    shift: float = 1.0
    label_dropout: float = 0.1

    def __post_init__(self) -> None:
        check_fields(self)
        positive(self, "scale", "shift")
        require(self, "label_dropout", 0 <= self.label_dropout <= 1, "must be in [0, 1]")

    def coefficients(self, t: Tensor) -> Coefficients:
        return Coefficients(t, 1 - t, torch.ones_like(t), -torch.ones_like(t))

    def sample_t(self, n: int, *, generator: Generators = None, device=None) -> Tensor:
        """(n,) float32 training times."""
        if self.t_sampling == "uniform":
            t = rand((n,), generator, device=device)
        else:
            t = torch.sigmoid(self.loc + self.scale * randn((n,), generator, device=device))
        return time_shift(t, self.shift)


@dataclass(frozen=True)
class FlowMatching(_FlowPath):
    """Flow matching (DiP's objective): x_t = t x + (1 - t) eps; the network predicts the
    velocity v = x - eps; plain MSE."""

    def target(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        return x0 - eps

    def predict(self, out: Tensor, x_t: Tensor, t: Tensor) -> Prediction:
        return from_velocity(self, out, x_t, t)

    def loss(
        self, model: Model, x: Tensor, y: Tensor, *, num_classes: int,
        generator: Generators = None, t: Tensor | None = None, noise: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float | Tensor]]:
        """MSE between model(x_t, t, y') and x - eps; y' has labels dropped to the null class."""
        return _target_mse(self, model, x, y, num_classes, generator, t, noise)


# ----------------------------------------------------------------------------- frequency-aware loss (DeCo)
# JPEG's example quantisation tables (ITU-T T.81 Annex K, Tables K.1 and K.2; IJG's base tables):
# entry [u][v] is the step for vertical frequency u and horizontal frequency v of an 8x8 DCT block.
JPEG_LUMINANCE = (
    (16, 11, 10, 16, 24, 40, 51, 61), (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56), (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77), (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101), (72, 92, 95, 98, 112, 100, 103, 99),
)
JPEG_CHROMINANCE = (
    (17, 18, 24, 47, 99, 99, 99, 99), (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99), (47, 66, 99, 99, 99, 99, 99, 99),
    *((99,) * 8,) * 4,
)


def dct_matrix(n: int) -> Tensor:
    """(n, n) orthonormal DCT-II: row k is a_k cos(pi (2j + 1) k / 2n) over j, a_0 = sqrt(1/n), else sqrt(2/n)."""
    j = torch.arange(n, dtype=torch.float64)
    k = j[:, None]
    scale = torch.full((n, 1), math.sqrt(2 / n), dtype=torch.float64)
    scale[0] = math.sqrt(1 / n)
    return (scale * torch.cos(math.pi * (2 * j + 1) * k / (2 * n))).float()


def jpeg_table(base: Sequence[Sequence[int]], quality: int) -> Tensor:
    """(8, 8) IJG quality scaling of a base table: s = 5000/q below q = 50, else 200 - 2q;
    floor((base * s + 50) / 100) clamped to [1, 255] (q = 50 gives the base table, q = 100 all ones)."""
    q = min(100, max(1, int(quality)))
    s = 5000 / q if q < 50 else 200 - 2 * q
    return torch.floor((torch.tensor(base, dtype=torch.float32) * s + 50) / 100).clamp(1, 255)


def jpeg_frequency_weights(quality: int = 85, gamma: float = 1.0) -> Tensor:
    """(3, 8, 8) DeCo's weights for the Y, Cb, Cr DCT coefficients: w = (mean(Q) / Q)^gamma divided by
    its mean, Q the luminance table for Y and the chrominance table for Cb and Cr at `quality`. Each
    channel's weights average 1; frequencies JPEG quantises coarsely (visually insignificant) get less."""
    tables = [jpeg_table(t, quality) for t in (JPEG_LUMINANCE, JPEG_CHROMINANCE, JPEG_CHROMINANCE)]
    weights = [(q.mean() / q) ** gamma for q in tables]
    return torch.stack([w / w.mean() for w in weights])


def rgb_to_ycbcr(x: Tensor) -> Tensor:
    """(B, 3, H, W) RGB -> YCbCr with JFIF's coefficients and no offsets (a linear map, for velocities)."""
    r, g, b = x.unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b
    return torch.stack([y, cb, cr], dim=1)


def block_dct(x: Tensor, n: int = 8) -> Tensor:
    """(B, C, H, W) -> (B, C, H/n, W/n, n, n) orthonormal 2D DCT of every n x n block, [..., u, v] =
    vertical frequency u, horizontal v; sides not divisible by n are reflect-padded first (as DeCo)."""
    pad_h, pad_w = -x.shape[2] % n, -x.shape[3] % n
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
    blocks = x.unfold(2, n, n).unfold(3, n, n)  # (B, C, H/n, W/n, n, n)
    d = dct_matrix(n).to(x)
    return d @ blocks @ d.T


def frequency_mse(out: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """mean(weights * (DCT8(YCbCr(out)) - DCT8(YCbCr(target)))^2) over every coefficient of every block;
    weights (C, 8, 8). Both maps are linear, so the difference is transformed once."""
    coeffs = block_dct(rgb_to_ycbcr(out.to(target.dtype) - target))  # (B, 3, H/8, W/8, 8, 8)
    return (weights.to(coeffs)[None, :, None, None] * coeffs.square()).mean()


@dataclass(frozen=True)
class FrequencyAwareFlowMatching(FlowMatching):
    """DeCo's frequency-aware flow matching: FlowMatching's velocity MSE plus `freq_weight` times the
    `frequency_mse` of the same velocities with `jpeg_frequency_weights(jpeg_quality, freq_gamma)`
    (DeCo's REPATrainer: weight 1, quality 85, gamma 1; "inv" mode is gamma 1 too, the mean cancels)."""

    freq_weight: float = 1.0
    jpeg_quality: int = 85
    freq_gamma: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self, "freq_weight", self.freq_weight >= 0, "must be >= 0")
        require(self, "jpeg_quality", 1 <= self.jpeg_quality <= 100, "must be in 1..100")
        require(self, "freq_gamma", self.freq_gamma >= 0, "must be >= 0")

    def loss(
        self, model: Model, x: Tensor, y: Tensor, *, num_classes: int,
        generator: Generators = None, t: Tensor | None = None, noise: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float | Tensor]]:
        t, eps, x_t = _noised(self, x, generator, t, noise)
        y = drop_labels(y, self.label_dropout, num_classes, generator)
        out, target = model(x_t, t, y), self.target(x, eps, t)
        fm = _mse(out, target)
        freq = frequency_mse(out, target, jpeg_frequency_weights(self.jpeg_quality, self.freq_gamma))
        loss = fm + self.freq_weight * freq
        return loss, {"loss": loss.detach(), "fm_loss": fm.detach(), "freq_loss": freq.detach()}


def mean_flow_target(u: AverageVelocity, x_t: Tensor, t: Tensor, r: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """u(x_t, t, r) and its MeanFlow regression target v + (r - t) du/dt (no gradient), (B, C, H, W) each.

    With t = 1 as data and r >= t the interval's end towards data, u(x_t, t, r) = 1/(r - t) * the
    integral of v(x_tau, tau) over [t, r], so x_r = x_t + (r - t) u. Differentiating
    (r - t) u = int_t^r v along the trajectory in t (r fixed) gives u = v + (r - t) du/dt with the
    total derivative du/dt = v . d_x u + d_t u: one forward-mode JVP with tangents (v, 1, 0) for
    (x_t, t, r). (The paper runs time the other way, data at 0: there u = v - (t - r) du/dt.)

    The JVP runs with SDPA's math backend: the fused CPU (flash) kernel has no forward-mode
    derivative (NotImplementedError under torch.func.jvp), nor do CUDA's flash/efficient ones.
    """
    with sdpa_kernel(SDPBackend.MATH):
        out, du_dt = torch.func.jvp(u, (x_t, t, r), (v, torch.ones_like(t), torch.zeros_like(r)))
    return out, (v + _bcast(r - t, v) * du_dt.to(v.dtype)).detach()


def guided_velocity(v: Tensor, v_null: Tensor, guided: Tensor, scale: float) -> Tensor:
    """MeanFlow's guidance folded into training (Geng et al. 2025, Sec. 4.2): the guided field
    scale * v + (1 - scale) * v_null for the samples that keep their label (`guided`, (B,) bool),
    v for the rest. v: (B, C, H, W), the conditional sample velocity; v_null: the network's own
    unconditional velocity at r = t, standing in for the unknown unconditional field."""
    # (B, 1, 1, 1): the scale, or 1 where unguided, in v's dtype (torch.where on Python numbers
    # would round the scale to float32)
    w = _bcast(1 + (scale - 1) * guided.to(v.dtype), v)
    return w * v + (1 - w) * v_null.to(v.dtype)


@dataclass(frozen=True)
class MeanFlow(_FlowPath):
    """MeanFlow (Geng et al. 2025): the network u(x_t, t, y, r) predicts the average velocity over
    [t, r] (see `mean_flow_target`; the backbone needs `interval_embed`), so that one evaluation
    x_r = x_t + (r - t) u crosses the interval: 1 step maps noise (t = 0) to data (r = 1).

    Training draws two times from the path's t distribution, t = the smaller (noisier), r = the
    larger; with probability 1 - interval_ratio r = t (plain flow matching: the paper's best
    ImageNet setting keeps 25% of the samples with r != t). Per sample, with d the mean of
    (u - target)^2 over its elements, the loss is sg(w) d with the adaptive weight
    w = 1 / (d + norm_eps)^norm_p (paper: p = 1, c = 1e-3; norm_p = 0 is the plain MSE). The paper's
    ||.||^2 is a sum over elements; the mean keeps the loss on flow matching's scale, so norm_eps
    is relative to a per-element error. prediction "x0" (pixel MeanFlow, pMF) has the network
    output an image and u = (out - x_t)/(1 - t) (see `average_velocity`); at r = t the network is
    then an ordinary velocity (or x0) predictor, and every solver can sample it.

    cfg_scale != 1 trains guidance in (`guided_velocity`): the model learns the average velocity of
    the guided field, so a 1-step sample is guided without the second (unconditional) evaluation
    that sampling-time CFG costs; each training step pays one extra forward pass (no gradient).
    """

    interval_ratio: float = 0.25
    norm_p: float = 1.0
    norm_eps: float = 1e-3
    prediction: Literal["velocity", "x0"] = "velocity"
    t_eps: float = 0.05
    cfg_scale: float = 1.0  # guidance trained in (1: none; the paper's ImageNet runs: 2 to 3)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self, "interval_ratio", 0 <= self.interval_ratio <= 1, "must be in [0, 1]")
        require(self, "cfg_scale", math.isfinite(self.cfg_scale) and self.cfg_scale >= 1, "must be finite and >= 1")
        require(self, "norm_p", self.norm_p >= 0, "must be >= 0 (0: no adaptive weighting)")
        positive(self, "norm_eps")
        require(self, "t_eps", 0 < self.t_eps <= 1, "must be in (0, 1]")

    def target(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        return x0 - eps

    def predict(self, out: Tensor, x_t: Tensor, t: Tensor) -> Prediction:
        return from_velocity(self, out, x_t, t) if self.prediction == "velocity" else from_x0(self, out, x_t, t)

    def average_velocity(self, out: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """The network output as u: itself, or (pixel MeanFlow's x-prediction) (out - x_t) / (1 - t)
        with 1 - t clamped at t_eps as XPrediction's loss does (training only: sampling goes through
        `predict`, exact, and never evaluates at t = 1)."""
        if self.prediction == "velocity":
            return out
        return (out.to(x_t.dtype) - x_t) / _bcast((1 - t).clamp_min(self.t_eps), x_t)

    def sample_interval(self, n: int, *, generator: Generators = None, device=None) -> tuple[Tensor, Tensor]:
        """(t, r), (n,) float32 each, t <= r; r = t for a fraction 1 - interval_ratio of them."""
        a = self.sample_t(n, generator=generator, device=device)
        b = self.sample_t(n, generator=generator, device=device)
        wide = rand((n,), generator, device=device) < self.interval_ratio
        t = torch.minimum(a, b)
        return t, torch.where(wide, torch.maximum(a, b), t)

    def loss(
        self, model: Model, x: Tensor, y: Tensor, *, num_classes: int,
        generator: Generators = None, t: Tensor | None = None, noise: Tensor | None = None,
        r: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float | Tensor]]:
        """Adaptively weighted MSE between model(x_t, t, y', r=r) and `mean_flow_target`; (t, r)
        come from `sample_interval` unless t is given (then r defaults to t)."""
        if t is None:
            t, r = self.sample_interval(x.shape[0], generator=generator, device=x.device)
        t, eps, x_t = _noised(self, x, generator, t, noise)
        r = t if r is None else r
        y = drop_labels(y, self.label_dropout, num_classes, generator)
        def u(z: Tensor, t_: Tensor, r_: Tensor, labels: Tensor = y) -> Tensor:
            return self.average_velocity(model(z, t_, labels, r=r_), z, t_)

        v = self.target(x, eps, t)
        if self.cfg_scale != 1:
            with torch.no_grad():
                v_null = u(x_t, t, t, torch.full_like(y, num_classes))
            v = guided_velocity(v, v_null, y != num_classes, self.cfg_scale)
        u, target = mean_flow_target(u, x_t, t, r, v)
        d = (u.to(target.dtype) - target).flatten(1).square().mean(1)  # (B,)
        loss = (d / (d.detach() + self.norm_eps) ** self.norm_p).mean()
        return loss, {"loss": loss.detach(), "mse": d.mean().detach()}


@dataclass(frozen=True)
class XPrediction(_FlowPath):
    """JiT's parameterisation: x_t = t x0 + noise_scale (1 - t) eps, the network predicts x0, and
    the loss is the velocity MSE with v = (x0 - x_t) / (1 - t) for both prediction and target:

        loss = mean(((x0_pred - x) / max(1 - t, t_eps))^2).

    The clamp `t_eps` (JiT: 0.05) keeps the 1/(1-t)^2 weight finite near data; for 1 - t >= t_eps
    the loss is exactly the velocity MSE. `noise_scale` (JiT: 1 at 256 px, 2 at 512 px) scales the
    noise, i.e. lowers the signal-to-noise ratio at every t; the velocity (x0 - x_t)/(1 - t) does
    not depend on it, and sampling starts from noise_scale * N(0, I) (see `prior_std`).

    By default `predict` converts with the exact 1 - t (singular at t = 1, where no solver
    evaluates the network), so sampling follows the true ODE. JiT's own sampler divides by the
    clamped 1 - t as well: `clamp_sampling=True` reproduces it (the velocity returned for
    1 - t < t_eps is then (x0_pred - x_t) / t_eps, so the last steps move only part of the way to
    x0_pred; x0 and eps stay the exact conversions).
    """

    t_eps: float = 0.05
    noise_scale: float = 1.0
    clamp_sampling: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self, "t_eps", 0 < self.t_eps <= 1, "must be in (0, 1]")
        positive(self, "noise_scale")

    def coefficients(self, t: Tensor) -> Coefficients:
        return Coefficients(t, self.noise_scale * (1 - t), torch.ones_like(t), torch.full_like(t, -self.noise_scale))

    def target(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        return x0

    def predict(self, out: Tensor, x_t: Tensor, t: Tensor) -> Prediction:
        pred = from_x0(self, out, x_t, t)
        if not self.clamp_sampling:
            return pred
        return pred._replace(velocity=(out - x_t) / _bcast((1 - t).clamp_min(self.t_eps), x_t))

    def loss(
        self, model: Model, x: Tensor, y: Tensor, *, num_classes: int,
        generator: Generators = None, t: Tensor | None = None, noise: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float | Tensor]]:
        t, _, x_t = _noised(self, x, generator, t, noise)
        y = drop_labels(y, self.label_dropout, num_classes, generator)
        x0_pred = model(x_t, t, y).to(x.dtype)
        # (v_pred - v) with v_pred = (x0_pred - x_t)/(1-t), v = (x - x_t)/(1-t), both clamped alike
        loss = ((x0_pred - x) / _bcast((1 - t).clamp_min(self.t_eps), x)).square().mean()
        return loss, {"loss": loss.detach(), "x0_mse": _mse(x0_pred, x).detach()}


def prior_std(objective: Schedule) -> float:
    """Std of the noise that sampling starts from at t = 0: the objective's `noise_scale` where it
    has one (x-prediction), else 1 (flow matching; DDPM starts from N(0, I) as DDPM does)."""
    return getattr(objective, "noise_scale", 1.0)


def _monotone_slopes(y: Tensor) -> Tensor:
    """Knot derivatives (per knot spacing) of a shape-preserving cubic Hermite interpolant:
    harmonic mean of the neighbouring secants (Fritsch-Butland), one-sided at the ends. y is
    strictly increasing here, so the interpolant is too."""
    d = y[1:] - y[:-1]
    inner = 2 * d[:-1] * d[1:] / (d[:-1] + d[1:])
    return torch.cat([d[:1], inner, d[-1:]])


@functools.lru_cache(maxsize=8)
def _alpha_knots(num_steps: int, beta_schedule: str, beta_start: float, beta_end: float) -> tuple[Tensor, Tensor]:
    """alpha = sqrt(alpha_bar) at t_j = j/N, j = 0..N (discrete step k = N-1-j, then 1 at t = 1)
    and the knot slopes of its interpolant; float64, (N+1,) each."""
    n = num_steps
    if beta_schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
    else:  # Nichol & Dhariwal's cosine schedule, betas clipped at 0.999 (only the last one is)
        f = torch.cos((torch.arange(n + 1, dtype=torch.float64) / n + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    alpha = torch.exp(0.5 * torch.cumsum(torch.log1p(-betas), 0))  # index k = 0..N-1
    y = torch.cat([alpha.flip(0), alpha.new_ones(1)])
    return y, _monotone_slopes(y)


@dataclass(frozen=True)
class DDPM:
    """DDPM (Ho et al.): variance preserving, eps-prediction, plain MSE on eps.

    Discrete step k in {0..N-1} (k = 0 least noisy; alpha_bar_k = prod_{i<=k} (1 - beta_i)) is
    presented to the network as the continuous time t = 1 - (k + 1)/N, so k = N-1 is t = 0 and
    t = 1 (alpha_bar = 1) is clean data; training draws k uniformly. For ODE/SDE solvers the
    schedule is made continuous by a monotone C1 cubic interpolation of alpha = sqrt(alpha_bar)
    through these N+1 knots: exact at every discrete step (so DDIM/ancestral on grids of knots
    reproduce the discrete samplers exactly) and smooth enough for high-order and adaptive
    solvers (alpha, unlike log(alpha_bar), stays smooth where the cosine schedule goes to 0).
    sigma = sqrt(1 - alpha^2). At t = 0, alpha is small but non-zero (sqrt(alpha_bar_{N-1})) and
    sampling starts from N(0, I) as DDPM does. Near data sigma ~ sqrt(1 - t), so sigma' is
    infinite at t = 1 and the final Euler step of the ODE solvers (from the last grid point into
    t = 1) is only accurate to O(sqrt(h)) there; ddim, whose last step returns the x0 prediction,
    is the natural sampler for DDPM models. beta_start/beta_end apply to the linear schedule only.
    """

    num_steps: int = 1000
    beta_schedule: Literal["linear", "cosine"] = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    label_dropout: float = 0.1

    def __post_init__(self) -> None:
        check_fields(self)
        require(self, "num_steps", self.num_steps >= 2, "must be >= 2")
        require(self, "beta_start", 0 < self.beta_start < 1, "must be in (0, 1)")
        require(self, "beta_end", self.beta_start <= self.beta_end < 1, f"must be in [beta_start={self.beta_start}, 1)")
        require(self, "label_dropout", 0 <= self.label_dropout <= 1, "must be in [0, 1]")

    def coefficients(self, t: Tensor) -> Coefficients:
        y, m = _alpha_knots(self.num_steps, self.beta_schedule, self.beta_start, self.beta_end)
        y, m = y.to(t.device), m.to(t.device)
        u = t.to(torch.float64).clamp(0, 1) * self.num_steps
        j = u.floor().clamp(max=self.num_steps - 1)
        tau = u - j  # position in [t_j, t_j+1], in knot spacings
        j = j.long()
        y0, y1, m0, m1 = y[j], y[j + 1], m[j], m[j + 1]
        tau2, tau3 = tau * tau, tau * tau * tau  # cubic Hermite basis and its derivative
        alpha = (2 * tau3 - 3 * tau2 + 1) * y0 + (3 * tau2 - 2 * tau3) * y1 + (tau3 - 2 * tau2 + tau) * m0 + (tau3 - tau2) * m1
        d_alpha = (6 * tau2 - 6 * tau) * (y0 - y1) + (3 * tau2 - 4 * tau + 1) * m0 + (3 * tau2 - 2 * tau) * m1
        d_alpha = d_alpha * self.num_steps  # per knot spacing -> per unit t
        sigma = torch.sqrt((1 - alpha) * (1 + alpha))  # factored: no cancellation as alpha -> 1
        d_sigma = -alpha * d_alpha / sigma  # from alpha^2 + sigma^2 = 1
        return Coefficients(*(c.to(t.dtype) for c in (alpha, sigma, d_alpha, d_sigma)))

    def sample_t(self, n: int, *, generator: Generators = None, device=None) -> Tensor:
        """(n,) float32 times t = 1 - (k+1)/N of uniformly drawn discrete steps k."""
        k = (rand((n,), generator, device=device, dtype=torch.float64) * self.num_steps).long()
        return (1 - (k.clamp(max=self.num_steps - 1) + 1) / self.num_steps).float()

    def target(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        return eps

    def predict(self, out: Tensor, x_t: Tensor, t: Tensor) -> Prediction:
        return from_eps(self, out, x_t, t)

    def loss(
        self, model: Model, x: Tensor, y: Tensor, *, num_classes: int,
        generator: Generators = None, t: Tensor | None = None, noise: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float | Tensor]]:
        """MSE between model(x_t, t, y') and eps."""
        return _target_mse(self, model, x, y, num_classes, generator, t, noise)


def gaussian_model(objective: Objective, mean: Tensor, std: Tensor) -> Model:
    """The exact (Bayes-optimal) network of `objective` for data x0 ~ N(mean, std^2) per element.

    mean/std broadcast against one sample (C, H, W). With var = alpha^2 std^2 + sigma^2:
    E[x0 | x_t] = mean + alpha std^2 (x_t - alpha mean) / var, E[eps | x_t] = sigma (x_t - alpha mean) / var.
    Labels are ignored. Used to test solvers (ours or a plugin's) against closed forms.
    """

    def model(x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        a, s, _, _ = broadcast_coefficients(objective, t, x)
        m, sd = mean.to(x), std.to(x)
        residual = (x - a * m) / (a * a * sd * sd + s * s)
        return objective.target(m + a * sd * sd * residual, s * residual, t)

    return model


def gaussian_mean_flow(mean: Tensor, std: Tensor) -> Callable[..., Tensor]:
    """The exact average velocity of the flow-matching path for data x0 ~ N(mean, std^2) per element,
    as a model (x, t, y, r=None) -> u; r = None (or r = t) is the instantaneous velocity.

    x_t ~ N(t mean, s(t)^2) with s(t) = sqrt(t^2 std^2 + (1 - t)^2), and the ODE's map is affine per
    element: x_r = r mean + s(r)/s(t) (x_t - t mean). Hence u = (x_r - x_t)/(r - t)
    = mean + (s(r)/s(t) - 1)/(r - t) (x_t - t mean), and at r = t the slope is s'(t)/s(t)
    = (t std^2 - (1 - t))/s(t)^2. One step from t = 0 to r = 1 gives mean + std x_0: the data.
    """

    def model(x: Tensor, t: Tensor, y: Tensor, r: Tensor | None = None) -> Tensor:
        r = t if r is None else r
        m, sd = mean.to(x), std.to(x)
        t_, r_ = _bcast(t, x), _bcast(r, x)
        s_t = torch.sqrt(t_ * t_ * sd * sd + (1 - t_) ** 2)
        s_r = torch.sqrt(r_ * r_ * sd * sd + (1 - r_) ** 2)
        h = r_ - t_
        slope = torch.where(h == 0, (t_ * sd * sd - (1 - t_)) / (s_t * s_t),
                            (s_r / s_t - 1) / torch.where(h == 0, torch.ones_like(h), h))
        return m + slope * (x - t_ * m)

    return model
