"""The weight shapes and token counts the benchmarks run, and how the ``bench`` command names them."""

from __future__ import annotations

from hipbmm_inductor.ops.validate import check_shape_supported

__all__ = ["SUITES", "DEFAULT_MS", "parse_shapes", "parse_ints"]

SUITES = {
    "llama3-8b": [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)],
    "llama3-70b": [(10240, 8192), (8192, 8192), (57344, 8192), (8192, 28672)],
    # A second set, other model families' linears (N, K): Qwen2.5-7B qkv, gate_up, down; Mistral-Nemo-12B
    # qkv, down; DeepSeek-V3-like shapes: a q_a/kv_a-sized projection whose N = 2064 no tile divides,
    # q_b, o, an expert's down; a 128-expert MoE router (N = 128); Qwen3-32B down (K = 25600).
    "qwen-mistral-deepseek": [(4608, 3584), (37888, 3584), (3584, 18944), (6144, 5120), (5120, 14336),
                              (2064, 7168), (24576, 1536), (7168, 16384), (7168, 2048), (128, 4096),
                              (5120, 25600)],
}
DEFAULT_MS = (1, 16, 64, 256, 1024, 4096)


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """``'N,K;N,K'`` (``x`` also separates) and suite names -> ``[(N, K), ...]``: at least one, each
    a weight the op takes (checked here, before any GPU work)."""
    shapes = []
    for part in text.replace(" ", "").split(";"):
        if not part:
            continue
        if part in SUITES:
            shapes += SUITES[part]
            continue
        try:
            n, k = (int(x) for x in part.lower().replace("x", ",").split(","))
        except ValueError:
            raise ValueError(f"--shapes: expected 'N,K;N,K' or a suite ({', '.join(SUITES)}), got {part!r}")
        problem = check_shape_supported(n, k)
        if problem:
            raise ValueError(f"--shapes: {part!r}: {problem}")
        shapes.append((n, k))
    if not shapes:
        raise ValueError(f"--shapes: no shapes given in {text!r}")
    return shapes


def parse_ints(text: str, arg: str) -> list[int]:
    """Comma-separated positive integers; errors name ``arg``. An empty item (``1,,2``, a trailing
    comma) is an error, not skipped: it is more likely a lost number than a stray comma."""
    items = text.split(",")
    if any(not x.strip() for x in items) and text.strip():
        raise ValueError(f"{arg}: empty item in {text!r} (expected comma-separated integers)")
    try:
        vals = [int(x) for x in items if x.strip()]
    except ValueError:
        raise ValueError(f"{arg}: expected comma-separated integers, got {text!r}")
    if not vals or min(vals) < 1:
        raise ValueError(f"{arg}: expected positive integers, got {text!r}")
    return vals

