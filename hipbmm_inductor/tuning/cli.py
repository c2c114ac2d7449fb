"""``python -m hipbmm_inductor tune ...`` and ``... cache ...``: offline tuning and cache upkeep.

``tune`` runs the chosen backend on synthetic inputs of each shape with ``HIPBMM_TUNING=online``:
the backend asks :func:`hipbmm_inductor.tuning.choose` as on any call, and a miss is tuned and
written to the cache. Shapes come from ``--shapes MxNxK ...`` or from a file that recording
wrote (``--from FILE``, TunableOp's record-untuned workflow). ``cache`` shows, clears, exports
and imports the tuning files (exported files ship with a deployment; importing merges by key).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from dataclasses import dataclass
from contextlib import contextmanager
from typing import Iterator, Optional

import torch

from hipbmm_inductor.cli import backend_arg, device_arg

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


def parse_shape(text: str) -> tuple[int, int, int]:
    """``"16x4096x4096"`` (M x N x K) -> ``(16, 4096, 4096)``; ``ValueError`` names the rule."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*[xX,]\s*(\d+)\s*", text)
    if not m:
        raise ValueError(f"--shapes: {text!r} is not MxNxK (three positive integers, e.g. 16x4096x4096)")
    dims = tuple(int(g) for g in m.groups())
    if min(dims) <= 0:
        raise ValueError(f"--shapes: {text!r}: M, N and K must be positive")
    return dims  # type: ignore[return-value]


def _device(name: Optional[str]) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def _device_fp8(device: torch.device) -> torch.dtype:
    from .key import device_info

    # MI300 (gfx942) uses the fnuz flavour; MI350 and NVIDIA the OCP one (docs/contract.md, "aiter hipb_mm").
    return torch.float8_e4m3fnuz if device_info(device).arch.startswith("gfx94") else torch.float8_e4m3fn


_DTYPE_ALIASES = {"bf16": "bfloat16", "fp32": "float32", "e4m3fn": "float8_e4m3fn", "e4m3fnuz": "float8_e4m3fnuz"}


def _dtype_arg(name: str) -> Optional[torch.dtype]:
    """A dtype name from a recorded-shapes file (``ValueError`` for one this torch lacks)."""
    from .key import parse_dtype

    return parse_dtype(_DTYPE_ALIASES.get(name, name))


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def _choice_type(what: str, allowed: dict[str, Optional[torch.dtype]]):
    """An argparse type taking exactly ``allowed``'s spellings (case-insensitive)."""

    def parse(text: str) -> Optional[torch.dtype]:
        key = text.strip().lower()
        if key not in allowed:
            raise argparse.ArgumentTypeError(f"unknown {what} {text!r}; expected one of {', '.join(allowed)}")
        return allowed[key]

    parse.__name__ = what  # argparse names the type in some messages
    return parse


# The dtypes the op takes (ops.validate: fp8 flavours and bias dtypes), with the short spellings.
_fp8_type = _choice_type("fp8 flavour", {"float8_e4m3fn": torch.float8_e4m3fn, "e4m3fn": torch.float8_e4m3fn,
                                         "float8_e4m3fnuz": torch.float8_e4m3fnuz, "e4m3fnuz": torch.float8_e4m3fnuz})
_bias_type = _choice_type("bias dtype", {"none": None, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                                         "float32": torch.float32, "fp32": torch.float32})


def _inputs(spec: ShapeSpec, device: torch.device, seed: int):
    from hipbmm_inductor import prepack_weight

    g = torch.Generator(device=device).manual_seed(seed)
    fp8 = spec.fp8 or _device_fp8(device)
    # Values spread over the fp8 range: timing does not depend on them, validation of the
    # candidates does (an all-zero input would let a mis-tiled config pass).
    A = (torch.randn(spec.m, spec.k, generator=g, device=device) * 2).to(fp8)
    W = (torch.randn(spec.n, spec.k, generator=g, device=device) * 2).to(fp8)
    scale_a = torch.rand(spec.m, 1, generator=g, device=device) * 0.02 + 1e-3
    scale_b = torch.rand(1, spec.n, generator=g, device=device) * 0.02 + 1e-3
    bias = None if spec.bias is None else torch.randn(spec.n, generator=g, device=device).to(spec.bias)
    return A, prepack_weight(W), scale_a, scale_b, bias, spec.out_dtype


def _progress(items: list, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc, unit="shape", file=sys.stderr, disable=None)


@contextmanager
def _settings_restored() -> Iterator[None]:
    """``tune`` switches to online mode and maybe another backend; in-process callers get theirs back."""
    from hipbmm_inductor import envs, tuning
    from hipbmm_inductor.ops import registry

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
    from hipbmm_inductor import tuning
    from hipbmm_inductor.ops import registry
    from hipbmm_inductor.ops.validate import check_inputs

    from .key import device_info

    tuning.set_mode("online")
    t = tuning.tuner()
    results, failures = [], 0
    for spec in _progress(specs, "tuning"):
        label = spec.label or f"{spec.m}x{spec.n}x{spec.k}"
        try:
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
    return 1 if failures else 0


def _cached_row(t, info, backend: str, args, spec: ShapeSpec):
    """The stored row for this shape (any extra key: the backend chose it; the newest wins)."""
    from .key import dtype_name, m_bucket

    A, B, _, _, bias, out_dtype = args
    want = (backend, info.arch, info.name, info.versions, dtype_name(A.dtype), dtype_name(B.dtype),
            dtype_name(out_dtype), dtype_name(None if bias is None else bias.dtype), spec.n, spec.k,
            m_bucket(spec.m))
    rows = [row for row in t.store.load(info.arch) if row.key()[:-1] == want]
    return max(rows, key=lambda r: r.measured_at) if rows else None


def _cmd_tune(args: argparse.Namespace) -> int:
    from .untuned import read_untuned, untuned_path

    from hipbmm_inductor import tuning

    from .key import device_info

    device = _device(args.device)
    if args.cache_dir:
        tuning.set_cache_dir(args.cache_dir)
    specs: list[ShapeSpec] = []
    bias, fp8 = args.bias, args.fp8  # parsed by _bias_type / _fp8_type
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
            if s.extra:
                print(f"skipping {s.m}x{s.n}x{s.k}: extra key {s.extra!r} cannot be reproduced from the CLI",
                      file=sys.stderr)
                continue
            specs.append(ShapeSpec(s.m, s.n, s.k, fp8=_dtype_arg(s.a_dtype), bias=_dtype_arg(s.bias),
                                   out_dtype=_dtype_arg(s.out_dtype), backend=args.backend or s.backend))
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


def _stores(args: argparse.Namespace):
    from hipbmm_inductor import tuning

    if args.cache_dir:
        tuning.set_cache_dir(args.cache_dir)
    return tuning.tuner().store


def _cmd_show(args: argparse.Namespace) -> int:
    from .key import device_info
    from .rows import read_rows

    from .config_check import config_problem

    store = _stores(args)
    info = device_info(_device(args.device))
    report = {"folder": store.folder, "files": []}
    for arch, path in store.files():
        loaded = read_rows(path)
        current = [r for r in loaded.rows if (r.arch, r.device_name, r.versions) == (info.arch, info.name, info.versions)]
        shown = loaded.rows if args.all else current
        report["files"].append({
            "arch": arch, "path": path, "rows": len(loaded.rows), "usable_here": len(current),
            "other_versions_or_devices": len(loaded.rows) - len(current), "unreadable_lines": len(loaded.bad_lines),
            "entries": [
                {"backend": r.backend, "device": r.device_name, "versions": r.versions, "a_dtype": r.a_dtype,
                 "bias": r.bias, "m_bucket": r.m_bucket, "n": r.n, "k": r.k, "extra": r.extra,
                 "config": r.config_dict(), "time_us": r.time_us, "default_time_us": r.default_time_us,
                 "measured_at": r.measured_at,
                 # What the tuner would do with it here: None, or why it skips the row.
                 "unusable": config_problem(r)[0] if r.versions == info.versions else None}
                for r in shown
            ],
        })
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"tuning cache folder: {report['folder']}")
    print(f"this device: {info.name} ({info.arch}); versions {info.versions}")
    if not report["files"]:
        print("  (no tuning files)")
    for f in report["files"]:
        print(f"{f['path']}: {f['rows']} row(s), {f['usable_here']} usable here, "
              f"{f['other_versions_or_devices']} from other versions/devices"
              + (f", {f['unreadable_lines']} unreadable line(s)" if f["unreadable_lines"] else ""))
        for e in f["entries"]:
            gain = e["default_time_us"] / e["time_us"] if e["time_us"] else float("nan")
            print(f"  {e['backend']:<9} M<={e['m_bucket']:<6} N={e['n']:<6} K={e['k']:<6} bias={e['bias']:<8} "
                  f"{e['time_us']:8.1f} us  x{gain:.2f} vs default  {json.dumps(e['config'])}"
                  + (f"  [{e['versions']}]" if args.all else "")
                  + (f"  UNUSABLE (the heuristic runs instead): {e['unusable']}" if e["unusable"] else ""))
    return 0


def _cmd_clear(args: argparse.Namespace) -> int:
    from hipbmm_inductor import tuning

    from .key import device_info, safe_arch
    from .untuned import untuned_path
    from .files import file_lock

    store = _stores(args)
    info = device_info(_device(args.device))
    files = [(a, p) for a, p in store.files() if args.arch is None or a == safe_arch(args.arch)]
    for arch, path in files:
        # Both under the writers' lock (Store), so a process tuning now either wrote before the
        # clear (and its rows are cleared) or writes after it (and sees the cleared file).
        if args.stale:
            report = store.rewrite(arch, lambda r: r.versions == info.versions, info.versions,
                                   "measured with other library versions (cache clear --stale)")
            print(f"{path}: removed {report.dropped} row(s) from other library versions, kept {report.rows}")
        else:
            report = store.clear(arch, info.versions)
            print(f"{path}: cleared {report.dropped} row(s)")
    if not args.stale and args.untuned:
        for name in sorted(os.listdir(store.folder)) if os.path.isdir(store.folder) else []:
            if not (name.startswith("untuned-") and name.endswith(".csv")):
                continue
            path = os.path.join(store.folder, name)
            if args.arch is not None and path != untuned_path(store.folder, args.arch):
                continue
            # Emptied, not deleted, under the lock append_untuned takes (as the tuning files: the
            # lock file stays, a symlinked file stays a link).
            real = os.path.realpath(path)
            with file_lock(real):
                with open(real, "w"):
                    pass
            print(f"{path}: emptied")
    if not files:
        print(f"no tuning files in {store.folder}")
    tuning.reload()
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .key import device_info, safe_arch
    from .files import write_atomically
    from .rows import read_rows, render

    store = _stores(args)
    info = device_info(_device(args.device))
    archs = {a: p for a, p in store.files()}
    wanted = list(archs) if args.all else [safe_arch(args.arch or info.arch)]
    missing = [a for a in wanted if a not in archs]
    if missing:
        raise ValueError(f"cache export: no tuning file for {', '.join(missing)} in {store.folder}")
    if len(wanted) > 1 and not os.path.isdir(args.dest):
        raise ValueError(f"cache export --all: DEST {args.dest!r} must be an existing folder")
    for arch in wanted:
        loaded = read_rows(archs[arch])
        rows = [r for r in loaded.rows if r.versions == info.versions] if args.current else loaded.rows
        dest = os.path.join(args.dest, f"tuning-{arch}.csv") if os.path.isdir(args.dest) else args.dest
        try:
            # Atomic: a full disk or a kill leaves the old DEST (or none), never a truncated one.
            write_atomically(dest, render(rows, arch, info.versions))
        except OSError as e:
            raise RuntimeError(f"cache export: cannot write {dest}: {e.strerror or e}") from None
        print(f"exported {len(rows)} row(s) for {arch} to {dest}")
    return 0


def _describe(row) -> str:
    return (f"{row.backend} {row.arch} N={row.n} K={row.k} M<={row.m_bucket} bias={row.bias}"
            + (f" [{row.extra}]" if row.extra else ""))


def _cmd_import(args: argparse.Namespace) -> int:
    from hipbmm_inductor import tuning

    from .config_check import config_problem
    from .key import device_info
    from .rows import read_rows

    store = _stores(args)
    info = device_info(_device(args.device))
    merged = refused = 0
    for src in args.files:
        if not os.path.isfile(src):
            raise ValueError(f"cache import: {src!r} is not a file")
        loaded = read_rows(src)
        if loaded.bad_lines:
            refused += len(loaded.bad_lines)
            print(f"{src}: refused {len(loaded.bad_lines)} unreadable line(s) ({', '.join(loaded.problems)})",
                  file=sys.stderr)
        if loaded.duplicates:
            print(f"{src}: {len(loaded.duplicates)} key(s) appear more than once; importing the row measured "
                  f"last of each", file=sys.stderr)
        by_arch: dict[str, list] = {}
        unchecked: set[str] = set()
        other_versions = 0
        for r in loaded.rows:
            if r.versions != info.versions:
                # Checked when a process with those versions loads it: this one's backends cannot
                # speak for another release's config space. Kept for a rollback, as in the cache.
                other_versions += 1
                by_arch.setdefault(r.arch, []).append(r)
                continue
            problem, checked = config_problem(r)
            if problem is not None:
                refused += 1
                print(f"{src}: refused {_describe(r)}: {problem}", file=sys.stderr)
                continue
            if not checked:
                unchecked.add(r.backend)
            by_arch.setdefault(r.arch, []).append(r)
        if other_versions:
            print(f"{src}: {other_versions} row(s) from other library versions imported unchecked (they are "
                  f"checked where those versions run)", file=sys.stderr)
        for name in sorted(unchecked):
            print(f"{src}: configs of backend {name!r} not checked (no such backend here, or it has no config "
                  f"space)", file=sys.stderr)
        for arch, rows in by_arch.items():
            try:
                report = store.merge(arch, rows, info.versions, f"cache import of {src}")
            except Exception as e:  # OSError, filelock.Timeout
                raise RuntimeError(f"cache import: cannot write {store.path(arch)}: {type(e).__name__}: {e}") from None
            usable = sum(r.versions == info.versions and r.device_name == info.name for r in rows)
            print(f"{src}: merged {len(rows)} row(s) into {store.path(arch)}: {report.added} new, {report.replaced} "
                  f"replacing older rows ({usable} usable on this device)")
            if report.kept_newer:
                print(f"{src}: {report.kept_newer} row(s) not taken: the cache's row for the key was measured "
                      f"later (the imported rows are kept in {store.path(arch)}.rejected)", file=sys.stderr)
            merged += len(rows)
    tuning.reload()
    return 1 if refused or not merged else 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", default=None, help="tuning cache folder (default: HIPBMM_TUNING_CACHE)")
    p.add_argument("--device", type=device_arg, default=None, help="device (default: cuda if present, else cpu)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="tune GEMM shapes now and store the results in the tuning cache")
    p.add_argument("--shapes", nargs="+", metavar="MxNxK", help="shapes to tune, e.g. 16x4096x4096 256x14336x4096")
    p.add_argument("--from", dest="from_file", nargs="?", const="", default=None, metavar="FILE",
                   help="tune the shapes recorded with HIPBMM_TUNING_RECORD=1 (default FILE: this device's "
                        "untuned-<arch>.csv in the cache folder)")
    p.add_argument("--backend", type=backend_arg, default=None, help="backend to tune (default: HIPBMM_BACKEND / auto)")
    p.add_argument("--bias", type=_bias_type, default=None, help="bias dtype for --shapes: none (default), bfloat16 or float32")
    p.add_argument("--fp8", type=_fp8_type, default=None,
                   help="fp8 flavour for --shapes: float8_e4m3fn or float8_e4m3fnuz (default: the device's)")
    p.add_argument("--force", action="store_true", help="re-tune shapes that are already cached")
    p.add_argument("--max-candidates", type=_count, default=None, metavar="N",
                   help="time at most N candidates per shape (evenly spaced over the backend's space) plus the default")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _common(p)
    p.set_defaults(func=_cmd_tune)

    c = sub.add_parser("cache", help="show, clear, export or import the tuning cache")
    csub = c.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    s = csub.add_parser("show", help="list tuning files and the configs usable on this device")
    s.add_argument("--all", action="store_true", help="also list rows from other library versions and devices")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    _common(s)
    s.set_defaults(func=_cmd_show)
    cl = csub.add_parser("clear", help="empty the tuning files under the writers' lock (or drop only rows from other library versions)")
    cl.add_argument("--arch", default=None, help="only this architecture's file (e.g. gfx942, sm_90)")
    cl.add_argument("--stale", action="store_true", help="keep the file, drop rows from other library versions")
    cl.add_argument("--untuned", action="store_true", help="also empty the recorded untuned-shape files")
    _common(cl)
    cl.set_defaults(func=_cmd_clear)
    e = csub.add_parser("export", help="write a tuning file to ship with a deployment")
    e.add_argument("dest", help="file to write (or a folder: tuning-<arch>.csv inside it)")
    e.add_argument("--arch", default=None, help="architecture to export (default: this device's)")
    e.add_argument("--all", action="store_true", help="every architecture (DEST must be a folder)")
    e.add_argument("--current", action="store_true", help="only rows measured with this process's library versions")
    _common(e)
    e.set_defaults(func=_cmd_export)
    i = csub.add_parser("import", help="merge exported tuning files into the cache by key (the row measured last wins); "
                                               "refuses configs the backend cannot launch (exit 1)")
    i.add_argument("files", nargs="+", help="tuning CSV files")
    _common(i)
    i.set_defaults(func=_cmd_import)
