"""The benchmarks' plots (matplotlib, the ``bench`` extra)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only: the machines that run benchmarks have no display

import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plot_gemm", "plot_block"]


def plot_gemm(result: dict, path: str) -> None:
    """TFLOP/s and speedup over the baseline per M, one line per weight shape (no-bias records)."""
    recs = [r for r in result["records"] if not r["bias"]] or result["records"]
    shapes = list(dict.fromkeys((r["N"], r["K"]) for r in recs))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 6))
    for i, (N, K) in enumerate(shapes):
        rs = sorted((r for r in recs if (r["N"], r["K"]) == (N, K)), key=lambda r: r["M"])
        m = [r["M"] for r in rs]
        color = f"C{i % 10}"
        ax1.plot(m, [r["ours_tflops"] for r in rs], "-o", color=color, label=f"{N}x{K} ours")
        ax1.plot(m, [r["baseline_tflops"] for r in rs], "--x", color=color, alpha=0.6)
        ax2.plot(m, [r["speedup"] for r in rs], "-o", color=color, label=f"{N}x{K}")
    ax1.set(xscale="log", yscale="log", xlabel="M (tokens)", ylabel="TFLOP/s",
            title=f"{result['device']}: hipb_mm_fp8 ({result['backend']}, {result.get('accumulation', 'promoted')} "
                  f"accumulation, solid)\nvs _scaled_mm (dashed)")
    ax2.axhline(1.0, color="k", lw=0.8)
    ax2.axhline(1.2, color="g", lw=0.8, ls=":")
    ax2.axhline(0.9, color="r", lw=0.8, ls=":")
    ax2.set(xscale="log", xlabel="M (tokens)", ylabel="speedup vs torch._scaled_mm (rowwise)",
            title=f"speedup, no bias (geomean of every point run: x{result['geomean_speedup']:.2f}); CUDA graphs")
    ax1.legend(fontsize=7, ncol=2)
    ax2.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_block(records: list, path: str, device_name: str, backend: str) -> None:
    """Speedup of the rewrite per token count, one line per mode: solid for the wall loop (host
    included), dashed for the device time with the launch queue kept full, where measured."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, mode in enumerate(dict.fromkeys(r.mode for r in records)):
        rs = sorted((r for r in records if r.mode == mode), key=lambda r: r.tokens)
        ax.plot([r.tokens for r in rs], [r.speedup for r in rs], "-o", color=f"C{i}", label=f"{mode} (wall loop)")
        dev = [r for r in rs if getattr(r, "device_speedup", None) is not None]
        if dev:
            ax.plot([r.tokens for r in dev], [r.device_speedup for r in dev], "--s", color=f"C{i}",
                    label=f"{mode} (device, queue full)")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set(xscale="log", xlabel="tokens", ylabel="block time without / with the rewrite",
           title=f"{device_name}: compiled FP8 {records[0].model} block, hipb_mm_fp8 ({backend}) vs Inductor's own")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
