"""The page's curve figures (PNG, beside its sample grids): the lr sweep's loss and grad-norm
curves, the fair arms' loss curves side by side, and Fig. 3's readout over the checkpoints. Every
point is read from the arms' result.json ("curve": [step, loss, grad norm] per logged row)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.studies import FAIR_LABELS, best_lrs
from pixdiff.runtime import atomic_write

Result = dict[str, Any]
COLOURS = {"DiP": "tab:blue", "DiT-only": "tab:orange"}


def _figure(panels: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4), dpi=110, squeeze=False)
    return plt, fig, axes[0]


def _save(plt: Any, fig: Any, axes: Any, path: Path, legend: int = 7) -> Path:
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=legend)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return path


def _plot(ax: Any, r: Result, column: int, **style: Any) -> None:
    curve = r.get("curve") or []
    ax.plot([c[0] for c in curve], [c[column] for c in curve], lw=1, **style)


def sweep_figure(sweep: list[Result], path: Path) -> Path:
    """Loss (left pair) and grad norm (right pair) of each side at every lr."""
    plt, fig, axes = _figure(4)
    for k, label in enumerate(FAIR_LABELS):
        for r in sorted((r for r in sweep if r["label"] == label), key=lambda r: r["lr"]):
            tag = f"lr {r['lr']:g}" + (" (failed)" if r.get("failed") else "")
            _plot(axes[k], r, 1, label=tag)
            _plot(axes[2 + k], r, 2, label=tag)
        axes[k].set(title=f"{label}: training loss", xlabel="step", yscale="log")
        axes[2 + k].set(title=f"{label}: grad norm (before clip 1.0)", xlabel="step", yscale="log")
    return _save(plt, fig, axes, path)


def fair_figure(groups: dict[str, list[Result]], path: Path) -> Path:
    """Both sides' loss curves on one axis (the same v-target), one line per seed; grad norms beside."""
    plt, fig, axes = _figure(2)
    for label, rs in groups.items():
        for r in rs:
            tag = f"{label} lr {r['lr']:g} s{r['seed']}"
            _plot(axes[0], r, 1, color=COLOURS.get(label), alpha=0.8, label=tag)
            _plot(axes[1], r, 2, color=COLOURS.get(label), alpha=0.8, label=tag)
    axes[0].set(title="training loss (same target)", xlabel="step", yscale="log")
    axes[1].set(title="grad norm", xlabel="step", yscale="log")
    return _save(plt, fig, axes, path, legend=6)


def fig3_figure(fig3: dict[str, list[Result]], path: Path) -> Path:
    """Loss, the in-patch readout PSNR at t = 0.6 and the sample PSNR over the checkpoints."""
    plt, fig, axes = _figure(3)
    for label, rs in fig3.items():
        for r in rs:
            style = {"color": COLOURS.get(label), "ls": "-" if r["seed"] == 0 else "--", "label": f"{label} s{r['seed']}"}
            _plot(axes[0], r, 1, **style)
            steps = sorted(int(s) for s in r.get("probes", {}))
            probes = [r["probes"][str(s)] for s in steps]
            high = [next(x["psnr_high"] for x in p["readout"] if abs(x["t"] - 0.6) < 1e-9) for p in probes]
            axes[1].plot(steps, high, marker="o", lw=1, **style)
            axes[2].plot(steps, [sum(p["psnr"]) / len(p["psnr"]) for p in probes], marker="o", lw=1, **style)
    axes[0].set(title="training loss", xlabel="step", yscale="log")
    axes[1].set(title="in-patch readout PSNR, t = 0.6 (dB)", xlabel="step")
    axes[2].set(title="sample PSNR to the image (dB)", xlabel="step")
    return _save(plt, fig, axes, path)


def write_all(results: dict[str, list[Result]], scale: str, folder: Path) -> dict[str, Path]:
    """The figures whose arms have finished: {"sweep", "fair", "fig3"} -> PNG path."""
    out: dict[str, Path] = {}
    fair = results.get("fair", [])
    sweep = [r for r in fair if r["seed"] == 0]
    if sweep:
        out["sweep"] = sweep_figure(sweep, folder / "lr_sweep.png")
    best = best_lrs(fair, scale)
    groups = {label: [r for r in fair if r["label"] == label and r["lr"] == lr and not r.get("failed")]
              for label, lr in best.items()}
    if groups:
        out["fair"] = fair_figure(groups, folder / "fair_curves.png")
    fig3: dict[str, list[Result]] = {}
    for r in results.get("fig3", []):
        if not r.get("failed"):
            fig3.setdefault(r["label"], []).append(r)
    if fig3:
        out["fig3"] = fig3_figure(fig3, folder / "fig3_curves.png")
    return out
