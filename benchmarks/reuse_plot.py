"""docs/speed_reuse.png from benchmarks/results/cpu_emoji_tiny_reuse.json (matplotlib: a plotting
tool for this script only, not a pixdiff dependency).

    python benchmarks/reuse_plot.py [IN.json] [OUT.png]
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    src = sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/cpu_emoji_tiny_reuse.json"
    dst = sys.argv[2] if len(sys.argv) > 2 else "docs/speed_reuse.png"
    d = json.load(open(src))
    rows = {k: v for k, v in d["rows"].items() if "psnr_mean_db" in v}
    full = d["rows"]["off"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    for name, r in rows.items():
        label = name if len(name) < 16 else name[:14] + "..."
        a.errorbar(r["evaluations"], r["psnr_mean_db"], yerr=[[r["psnr_mean_db"] - r["psnr_min_db"]], [0]],
                   fmt="o", capsize=3, label=label)
        b.plot(r["evaluations"], r["coarse_fd"], "o", label=label)
    a.axhline(30, color="grey", ls="--", lw=1)
    a.set(xlabel="backbone evaluations per image", ylabel="PSNR to the full sampler (dB), mean and min",
          title="drift from the full sampler")
    spread = d["fd_seed_spread"]
    b.axhspan(spread["min"], spread["max"], color="grey", alpha=0.3, label="full sampler, 2 seed sets")
    b.plot(full["evaluations"], full["coarse_fd"], "k*", ms=10, label="full sampler")
    b.set(xlabel="backbone evaluations per image", ylabel="coarse FD to the data (lower is better)",
          title=f"quality, N = {d['num']}")
    b.legend(fontsize=7)
    a.legend(fontsize=7)
    fig.suptitle("emoji_tiny (557 steps), 50 Euler steps, CFG 3: backbone reuse", fontsize=10)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main()
