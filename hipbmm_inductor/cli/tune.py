"""``python -m hipbmm_inductor tune``: tune GEMM shapes now and store the results.

``tune`` runs the chosen backend on synthetic inputs of each shape with ``HIPBMM_TUNING=online``:
the backend asks :func:`hipbmm_inductor.tuning.choose` as on any call, and a miss is tuned and
written to the cache. Shapes come from ``--shapes MxNxK ...`` or from a file that recording
wrote (``--from FILE``, TunableOp's record-untuned workflow).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

import torch

from hipbmm_inductor import envs, hardware, tuning
from hipbmm_inductor.bench.inputs import random_inputs
from hipbmm_inductor.ops import registry
from hipbmm_inductor.ops.validate import check_inputs
from hipbmm_inductor.tuning.key import device_info, dtype_name, m_bucket
from hipbmm_inductor.tuning.untuned import read_untuned, untuned_path

from .args import backend_arg, bias_type, count, device_or_default, fp8_type, recorded_dtype
from .cache import add_common, store_for

__all__ = ["register", "parse_shape", "ShapeSpec"]


@dataclass(frozen=True)
class ShapeSpec:
    m: int
    n: int
    k: int
    fp8: Optional[torch.dtype] = None  # None: the device's flavour
    bias: Optional[torch.dtype] = None
    out_dtype: torch.dtype = torch.bfloat16
    backend: Optional[str] = None  # None: the configured backend
    label: str = ""
    # Settings applied while this shape is tuned, as (variable, value): what reproduces the tuning
    # key of a recorded shape (the backend's settings_for_extra).
    settings: tuple = ()


def parse_shape(text: str) -> tuple[int, int, int]:
    """``"16x4096x4096"`` (M x N x K) -> ``(16, 4096, 4096)``; ``ValueError`` names the rule."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*[xX,]\s*(\d+)\s*", text)
    if not m:
        raise ValueError(f"--shapes: {text!r} is not MxNxK (three positive integers, e.g. 16x4096x4096)")
    dims = tuple(int(g) for g in m.groups())
    if min(dims) <= 0:
        raise ValueError(f"--shapes: {text!r}: M, N and K must be positive")
    return dims  # type: ignore[return-value]



def _inputs(spec: ShapeSpec, device: torch.device, seed: int):
    # Values spread over the fp8 range (random_inputs): timing does not depend on them, validation
    # of the candidates does (an all-zero input would let a mis-tiled config pass).
    s = random_inputs(spec.m, spec.n, spec.k, spec.fp8 or hardware.fp8_dtype(device), spec.bias, device,
                      generator=torch.Generator(device=device).manual_seed(seed))
    return s.A, s.B, s.scale_a, s.scale_b, s.bias, spec.out_dtype


def _progress(items: list, desc: str):
    try:
        from tqdm import tqdm  # the `tune` extra's: without it, no progress bar
    except ImportError:
        return items
    return tqdm(items, desc=desc, unit="shape", file=sys.stderr, disable=None)


@contextmanager
def _settings_restored() -> Iterator[None]:
    """``tune`` switches to online mode and maybe another backend; in-process callers get theirs back."""
    mode = envs._overrides.get("HIPBMM_TUNING")
    backend = envs._overrides.get("HIPBMM_BACKEND")
    try:
        yield
    finally:
        tuning.set_mode(mode)
        envs.set_override("HIPBMM_BACKEND", backend)
        registry.reset_selection()


def _tune_specs(specs: list[ShapeSpec], device: torch.device, force: bool, as_json: bool) -> int:
    with _settings_restored():
        return _tune_specs_online(specs, device, force, as_json)


def _tune_specs_online(specs: list[ShapeSpec], device: torch.device, force: bool, as_json: bool) -> int:
    tuning.set_mode("online")
    t = tuning.tuner()
    results, failures = [], 0
    for spec in _progress(specs, "tuning"):
        label = spec.label or f"{spec.m}x{spec.n}x{spec.k}"
        try:
            with envs.overriding(dict(spec.settings)):
                if spec.backend:
                    registry.set_backend(spec.backend)
                backend = registry.backend_for(device)
                args = _inputs(spec, device, seed=spec.m * 31 + spec.n * 7 + spec.k)
                check_inputs(*args)
                before = dict(t.counters)
                if force:
                    with tuning.forcing():
                        backend.run(*args)
                else:
                    backend.run(*args)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                delta = {k: t.counters[k] - before.get(k, 0) for k in t.counters}
        except Exception as e:  # one bad shape must not stop a long offline run
            failures += 1
            results.append({"shape": label, "status": "error", "error": f"{type(e).__name__}: {e}"})
            continue
        if delta["tuned"]:
            status = "tuned"
        elif delta["hits"]:
            status = "cached"
        elif delta["failed"]:
            status, failures = "failed", failures + 1
        else:
            status = f"not tunable (the {backend.name!r} backend has no configs to tune)"
        row = _cached_row(t, device_info(device), backend.name, args, spec)
        entry = {"shape": label, "backend": backend.name, "status": status}
        if row is not None:
            entry.update(config=row.config_dict(), time_us=row.time_us, default_time_us=row.default_time_us)
        results.append(entry)
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            line = f"{r['shape']:>22}  {r.get('backend', ''):<10} {r['status']}"
            if "config" in r:
                gain = r["default_time_us"] / r["time_us"] if r["time_us"] else float("nan")
                line += f"  {r['time_us']:.1f} us (default {r['default_time_us']:.1f} us, x{gain:.2f})  {json.dumps(r['config'])}"
            if "error" in r:
                line += f"  {r['error']}"
            print(line)
        print(f"cache: {t.store.path(device_info(device).arch)}" + ("  (memory only)" if t.store.memory_only else ""))
    if t.store.memory_only:
        # An offline run whose results die with it: say so, and fail, so that scripts notice.
        lost = sum(r["status"] == "tuned" for r in results)
        print(f"tune: the cache folder {t.store.folder} could not be written; {lost} tuned result(s) are lost "
              f"when this command exits (set HIPBMM_TUNING_CACHE or --cache-dir to a writable folder)",
              file=sys.stderr)
        return 1
    return 1 if failures else 0


def _cached_row(t, info, backend: str, args, spec: ShapeSpec):
    """The stored row for this shape (any extra key: the backend chose it; the newest wins)."""
    A, B, _, _, bias, out_dtype = args
    want = (backend, info.arch, info.name, info.versions, dtype_name(A.dtype), dtype_name(B.dtype),
            dtype_name(out_dtype), dtype_name(None if bias is None else bias.dtype), spec.n, spec.k,
            m_bucket(spec.m))
    rows = [row for row in t.store.load(info.arch) if row.key()[:-1] == want]
    return max(rows, key=lambda r: r.measured_at) if rows else None


def _cmd_tune(args: argparse.Namespace) -> int:
    device = device_or_default(args.device)
    bad = envs.problems()
    if bad:  # before tuning anything: a run that ends in a settings error would leave its results unreported
        raise ValueError("; ".join(bad))
    store_for(args)  # the cache folder, checked
    specs: list[ShapeSpec] = []
    bias, fp8 = args.bias, args.fp8  # parsed by bias_type / fp8_type
    for text in args.shapes or []:
        m, n, k = parse_shape(text)
        specs.append(ShapeSpec(m, n, k, fp8=fp8, bias=bias, backend=args.backend))
    if args.from_file is not None:
        path = args.from_file or untuned_path(tuning.cache_dir(), device_info(device).arch)
        if not os.path.exists(path):
            raise ValueError(f"--from: {path} does not exist (record shapes with HIPBMM_TUNING_RECORD=1 first)")
        shapes, _ = read_untuned(path)
        info = device_info(device)
        for s in shapes:
            if s.arch != info.arch:
                print(f"skipping {s.m}x{s.n}x{s.k}: recorded on {s.arch}, this device is {info.arch}", file=sys.stderr)
                continue
            try:
                dtypes = dict(fp8=recorded_dtype(s.a_dtype), bias=recorded_dtype(s.bias),
                              out_dtype=recorded_dtype(s.out_dtype))
            except ValueError as e:  # recorded by another torch build, or an edited file
                print(f"skipping {s.m}x{s.n}x{s.k} in {path}: {e}", file=sys.stderr)
                continue
            backend_name = args.backend or s.backend
            settings: tuple = ()
            if s.extra:
                # The backend's own tuning key (e.g. the Triton kernel and accumulation mode): tuned
                # under the settings that give it that key here, if any do.
                backend = registry.get_backend(backend_name)
                settings_for = getattr(backend, "settings_for_extra", None)
                try:
                    if settings_for is None:
                        raise ValueError(f"the {backend_name!r} backend cannot say which settings give it")
                    settings = tuple(sorted(settings_for(s.extra, device, dtypes["fp8"]).items()))
                except ValueError as e:
                    print(f"skipping {s.m}x{s.n}x{s.k}: tuning key {s.extra!r}: {e}", file=sys.stderr)
                    continue
            specs.append(ShapeSpec(s.m, s.n, s.k, backend=backend_name, settings=settings, **dtypes))
        if not specs and not args.shapes:
            raise ValueError(f"tune --from: nothing to tune: every shape in {path} was skipped (reasons above)"
                             if shapes else f"tune --from: {path} records no shapes")
    if not specs:
        raise ValueError("tune: give --shapes MxNxK ... and/or --from FILE")
    if args.max_candidates is not None:
        t = tuning.tuner()
        previous = t.settings
        t.settings = dataclasses.replace(previous, max_candidates=args.max_candidates)  # validates
        try:
            return _tune_specs(specs, device, args.force, args.json)
        finally:
            t.settings = previous
    return _tune_specs(specs, device, args.force, args.json)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="tune GEMM shapes now and store the results in the tuning cache")
    p.add_argument("--shapes", nargs="+", metavar="MxNxK", help="shapes to tune, e.g. 16x4096x4096 256x14336x4096")
    p.add_argument("--from", dest="from_file", nargs="?", const="", default=None, metavar="FILE",
                   help="tune the shapes recorded with HIPBMM_TUNING_RECORD=1 (default FILE: this device's "
                        "untuned-<arch>.csv in the cache folder)")
    p.add_argument("--backend", type=backend_arg, default=None, help="backend to tune (default: HIPBMM_BACKEND / auto)")
    p.add_argument("--bias", type=bias_type, default=None, help="bias dtype for --shapes: none (default), bfloat16 or float32")
    p.add_argument("--fp8", type=fp8_type, default=None,
                   help="fp8 flavour for --shapes: float8_e4m3fn or float8_e4m3fnuz (default: the device's)")
    p.add_argument("--force", action="store_true", help="re-tune shapes that are already cached")
    p.add_argument("--max-candidates", type=count, default=None, metavar="N",
                   help="time at most N candidates per shape (evenly spaced over the backend's space) plus the default")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_common(p)
    p.set_defaults(func=_cmd_tune)
