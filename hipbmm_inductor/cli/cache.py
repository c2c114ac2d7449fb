"""``python -m hipbmm_inductor cache show|clear|export|import``: the tuning files' upkeep.

Exported files ship with a deployment; importing merges them by key, the row measured last
winning, and refuses configs the backend cannot launch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from hipbmm_inductor import tuning
from hipbmm_inductor.tuning.config_check import config_problem
from hipbmm_inductor.tuning.files import file_lock, write_atomically
from hipbmm_inductor.tuning.key import device_info, safe_arch
from hipbmm_inductor.tuning.rows import read_rows, render
from hipbmm_inductor.tuning.untuned import untuned_path

from .args import device_arg, device_or_default

__all__ = ["register", "add_common", "store_for"]


def store_for(args: argparse.Namespace):
    """The tuner's store, after ``--cache-dir``; refuses a cache path that is a file."""
    if args.cache_dir:
        tuning.set_cache_dir(args.cache_dir)
    store = tuning.tuner().store
    problem = store.folder_problem()
    if problem:
        raise ValueError(f"HIPBMM_TUNING_CACHE / --cache-dir: {problem}")
    return store


def _cmd_show(args: argparse.Namespace) -> int:
    store = store_for(args)
    info = device_info(device_or_default(args.device))
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
    store = store_for(args)
    info = device_info(device_or_default(args.device))
    files = [(a, p) for a, p in store.files() if args.arch is None or a == safe_arch(args.arch)]
    for arch, path in files:
        # Both under the writers' lock (Store), so a process tuning now either wrote before the
        # clear (and its rows are cleared) or writes after it (and sees the cleared file).
        if args.stale:
            report = store.rewrite(arch, lambda r: r.versions == info.versions, info.versions,
                                   "measured with other library versions (cache clear --stale)")
            print(f"{path}: removed {report.dropped} row(s) from other library versions, kept {report.rows}"
                  + (f" (the removed rows are in {path}.rejected)" if report.dropped else ""))
        else:
            report = store.clear(arch, info.versions)
            print(f"{path}: cleared {report.dropped} row(s)")
    if args.untuned:
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
    store = store_for(args)
    info = device_info(device_or_default(args.device))
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
    store = store_for(args)
    info = device_info(device_or_default(args.device))
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
        if not loaded.rows and not loaded.bad_lines:
            print(f"{src}: no rows to import (the file holds no tuning rows)", file=sys.stderr)
    tuning.reload()
    return 1 if refused or not merged else 0



def add_common(p: argparse.ArgumentParser) -> None:
    """``--cache-dir`` and ``--device``, which ``tune`` and every ``cache`` action take."""
    p.add_argument("--cache-dir", default=None, help="tuning cache folder (default: HIPBMM_TUNING_CACHE)")
    p.add_argument("--device", type=device_arg, default=None, help="device (default: cuda if present, else cpu)")


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("cache", help="show, clear, export or import the tuning cache")
    csub = c.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    s = csub.add_parser("show", help="list tuning files and the configs usable on this device")
    s.add_argument("--all", action="store_true", help="also list rows from other library versions and devices")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    add_common(s)
    s.set_defaults(func=_cmd_show)
    cl = csub.add_parser("clear", help="empty the tuning files under the writers' lock (or drop only rows from other library versions)")
    cl.add_argument("--arch", default=None, help="only this architecture's file (e.g. gfx942, sm_90)")
    cl.add_argument("--stale", action="store_true", help="keep the file, drop rows from other library versions")
    cl.add_argument("--untuned", action="store_true", help="also empty the recorded untuned-shape files")
    add_common(cl)
    cl.set_defaults(func=_cmd_clear)
    e = csub.add_parser("export", help="write a tuning file to ship with a deployment")
    e.add_argument("dest", help="file to write (or a folder: tuning-<arch>.csv inside it)")
    e.add_argument("--arch", default=None, help="architecture to export (default: this device's)")
    e.add_argument("--all", action="store_true", help="every architecture (DEST must be a folder)")
    e.add_argument("--current", action="store_true", help="only rows measured with this process's library versions")
    add_common(e)
    e.set_defaults(func=_cmd_export)
    i = csub.add_parser("import", help="merge exported tuning files into the cache by key (the row measured last wins); "
                                               "refuses configs the backend cannot launch (exit 1)")
    i.add_argument("files", nargs="+", help="tuning CSV files")
    add_common(i)
    i.set_defaults(func=_cmd_import)
