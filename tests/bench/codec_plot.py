#!/usr/bin/python3
"""Plots codec_bench's CSV: compression ratio against relative RMSE (log scale), one marker per
codec and tensor. Usage: codec_plot.py codec.csv codec.png"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src: str, dst: str) -> None:
    rows = [r for r in csv.DictReader(open(src)) if not r["codec"].startswith("auto")]
    fig, ax = plt.subplots(figsize=(8, 5))
    for codec in sorted({r["codec"] for r in rows}):
        pts = [r for r in rows if r["codec"] == codec]
        # Lossless codecs have no error: drawn at 1e-5 to stay on the log axis.
        x = [max(float(r["rel_rmse"]), 1e-5) for r in pts]
        y = [float(r["ratio"]) for r in pts]
        ax.scatter(x, y, label=codec)
    ax.set_xscale("log")
    ax.set_xlabel("relative RMSE of the round trip (lossless drawn at 1e-5)")
    ax.set_ylabel("compression ratio")
    ax.axvline(0.01, color="grey", linestyle=":", label="1% budget")
    ax.set_title("tensord codecs on Qwen3-VL-shaped tensors (tests/bench/codec_bench)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(dst, dpi=120)
    print(f"wrote {dst}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
