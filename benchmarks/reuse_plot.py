"""A reuse study's trade-off curves as a PNG, from benchmarks/reuse_study.py's JSON (matplotlib: a
plotting tool for this script only, not a pixdiff dependency).

    python benchmarks/reuse_plot.py IN.json OUT.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FDS = (("coarse_fd", "FD, 4x4 block means"), ("fd_effnet", "FD-EffNet"))


def main() -> None:
    src, dst = sys.argv[1], sys.argv[2]
    d = json.load(open(src))
    rows = {k: v for k, v in d["rows"].items() if "psnr_mean_db" in v}
    full = d["rows"]["off"]
    # per image at batch 1 where the study measured it (a signalled schedule decides per sample, so
    # batch forwards at batch 50 overstate its cost), else batch forwards
    key_x = "b1_evaluations" if "b1_evaluations" in full else "evaluations"
    xlabel = "backbone evaluations per image" + (" (batch 1)" if key_x == "b1_evaluations" else "")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for name, r in rows.items():
        label = name if len(name) < 20 else name[:14] + "..."
        axes[0].errorbar(r[key_x], r["psnr_mean_db"], yerr=[[r["psnr_mean_db"] - r["psnr_min_db"]], [0]],
                         fmt="o", capsize=3, label=label)
        for ax, (key, _) in zip(axes[1:], FDS):
            ax.plot(r[key_x], r[key], "o", label=label)
    axes[0].axhline(30, color="grey", ls="--", lw=1)
    axes[0].set(xlabel=xlabel, ylabel="PSNR to the full sampler (dB), mean and min",
                title="drift from the full sampler")
    for ax, (key, name) in zip(axes[1:], FDS):
        spread = d["fd_seed_spread"][key]
        ax.axhspan(spread["min"], spread["max"], color="grey", alpha=0.3,
                   label=f"full sampler, {len(spread['values'])} seed sets")
        ax.plot(full[key_x], full[key], "k*", ms=10, label="full sampler")
        ax.set(xlabel=xlabel, ylabel=f"{name} to the data (lower is better)",
               title=f"{name}, N = {d['num']}")
        ax.legend(fontsize=7)
    axes[0].legend(fontsize=7)
    s = d["sampler"]
    fig.suptitle(f"{d['checkpoint_note']}: {s['steps']} {s['solver']} steps, CFG {s['cfg_scale']:g}", fontsize=10)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main()
