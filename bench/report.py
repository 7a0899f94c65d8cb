#!/usr/bin/env python3
"""Summarises bench/work/results/ into bench/RESULTS.md (called by bench/run.sh).

FLOPs are counted analytically, per calibration token per decoder layer (Llama architecture,
d = hidden, I = intermediate, h = heads, kv = KV heads, dh = d / h, S = sequence length):

    projections  2·d·(h·dh + 2·kv·dh)      q, k, v
               + 2·(h·dh)·d               o
               + 2·3·d·I                  gate, up, down
    attention    2·2·dh·h·(S+1)/2         QKᵀ and P·V over the causal (unmasked) half only:
                                          query s sees s+1 keys, the mean over s is (S+1)/2

Not counted: norms, rotary, softmax, SiLU, residual adds, cosines (O(d) per token), the
embedding lookup (no FLOPs) and an LM head (none is needed). Total = tokens · layers · (above).

Targets are those of issue #15 ("Targets"); each is evaluated on this run's numbers only:
met, not met, or not measurable here (with the reason and, where there is one, the number).
"""
import argparse
import datetime
import glob
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys

import h5py
import numpy as np

PRECISIONS = ["f32", "bf16"]
LLMDROP_TARGETS = ["attn", "mlp", "block"]
KINDS = ["attention", "mlp", "block"]          # the importances the drop sets are chosen from
DROP_FRACTIONS = [0.25, 0.5]
TARGET_SPEED = 0.6        # droptrace ≤ 0.6 × PyTorch, same precision
TARGET_PEAK = 0.70        # ≥ 70% of the unit's peak over the whole score run (mid)
TARGET_BF16_DIFF = 5e-4   # bf16 importance within 5e-4 of f32
TARGET_RSS_GB = 1.2       # peak RSS on the 1.1B shape (tiny)
CPU_FLAGS = ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16"]
UNIT_NAMES = {"openblas_sgemm": "OpenBLAS SGEMM (f32)", "onednn_sgemm": "oneDNN dnnl_sgemm (f32)",
              "onednn_bf16": "oneDNN matmul bf16×bf16→f32"}


def flops(cfg, tokens, seq_len):
    d, I, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    h = cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads") or h
    dh = cfg.get("head_dim") or d // h
    proj = 2 * d * (h * dh + 2 * kv * dh) + 2 * (h * dh) * d + 2 * 3 * d * I
    attn = 2 * 2 * dh * h * (seq_len + 1) / 2
    return tokens * L * (proj + attn), proj, attn


def read_time_v(path):
    out = {}
    try:
        text = open(path).read()
    except OSError:
        return out
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if m:
        out["rss_gb"] = int(m.group(1)) / 1024 / 1024
    u = re.search(r"User time \(seconds\): ([\d.]+)", text)
    s = re.search(r"System time \(seconds\): ([\d.]+)", text)
    if u and s:
        out["cpu_s"] = float(u.group(1)) + float(s.group(1))
    m = re.search(r"Exit status: (\d+)", text)
    out["exit"] = int(m.group(1)) if m else None
    return out


def load_run(results, model, tool, rep):
    base = os.path.join(results, f"{model}.{tool}.{rep}")
    if not os.path.exists(base + ".wall"):
        return None
    run = json.load(open(base + ".wall"))
    run.update(read_time_v(base + ".time"))
    run["other_cpu_s"] = run["machine_busy_cpu_s"] - run.get("cpu_s", 0)
    run["rep"] = rep
    if tool.startswith("droptrace"):
        # its stdout is the human-readable drop table; its results are the store
        run["out"] = {} if os.path.exists(base + ".h5") else {"failed": True}
    else:
        try:
            run["out"] = json.loads(open(base + ".json").read())
        except (OSError, ValueError):
            run["out"] = {"failed": True}
    run["ok"] = run.get("exit") == 0 and not run["out"].get("failed")
    return run


def load_runs(results, model, tool):
    """Every repetition of one tool on one model, in order (1, 2, ... until the first missing one)."""
    runs, rep = [], 1
    while (r := load_run(results, model, tool, rep)) is not None:
        runs.append(r)
        rep += 1
    return runs


def attr_str(attrs, key):
    v = attrs.get(key)
    if v is None:
        return None
    if isinstance(v, np.ndarray):
        v = v.flat[0] if v.size else None
    return v.decode() if isinstance(v, (bytes, np.bytes_)) else str(v)


def read_h5(path):
    with h5py.File(path) as f:
        return {"attention": f["scores/attention"][0].astype(np.float64),
                "mlp": f["scores/mlp"][0].astype(np.float64),
                "block": f["scores/block"][0].astype(np.float64),
                "block_gap": f["similarity/block_gap"][0].astype(np.float64),
                # absent in stores from before --precision: those are f32
                "precision": attr_str(f.attrs, "precision") or "f32",
                "precision_recorded": "precision" in f.attrs,
                "matrix_kernel": attr_str(f.attrs, "matrix_kernel"),
                "droptrace_version": attr_str(f.attrs, "droptrace_version")}


def as_array(x):
    if isinstance(x, np.ndarray):
        return x
    return np.array([[np.nan if v is None else v for v in row] for row in x] if x and isinstance(x[0], list)
                    else [np.nan if v is None else v for v in x], dtype=np.float64)


def max_diff(a, b):
    a, b = as_array(a), as_array(b)
    if a.shape != b.shape:
        return float("nan")
    if (np.isnan(a) != np.isnan(b)).any():
        return float("inf")
    both = ~np.isnan(a) & ~np.isnan(b)
    return float(np.abs(a[both] - b[both]).max()) if both.any() else float("nan")


def spread(values):
    """(median, min, max) of the numbers given, NaN when there are none."""
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return (float("nan"),) * 3
    return statistics.median(values), min(values), max(values)


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=60).stdout.strip()
    except Exception:
        return ""


def bad(x):
    return x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x)))


def fmt(x, digits=2):
    return "n/a" if bad(x) else f"{x:.{digits}f}"


def fmt_e(x):
    return "n/a" if bad(x) else ("0" if x == 0 else f"{x:.1e}")


def fmt_s(st, digits=2):
    """A time as "median (min–max)"; the median alone when there is one value."""
    m, lo, hi = st
    if bad(m):
        return "—"
    return fmt(m, digits) if lo == hi else f"{fmt(m, digits)} ({fmt(lo, digits)}–{fmt(hi, digits)})"


def read_cpu(results):
    path = os.path.join(results, "cpuinfo.txt")
    text = open(path).read() if os.path.exists(path) else sh("awk '/^$/ { exit } { print }' /proc/cpuinfo")
    info = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            info.setdefault(k.strip(), v.strip())
    flags = set(info.get("flags", "").split())
    return {"name": info.get("model name", "?"), "family": info.get("cpu family", "?"),
            "model": info.get("model", "?"), "stepping": info.get("stepping", "?"),
            "flags": {f: f in flags for f in CPU_FLAGS}, "hypervisor": "hypervisor" in flags,
            "bf16_units": "avx512_bf16" in flags or "amx_bf16" in flags}


def unit_of(kernel):
    """The matrix unit (a peaks.json key) a matrix_kernel description runs on, and whether its bf16
    is emulated (bf16-rounded inputs on an f32 kernel). (None, False) when the description is unknown."""
    if not kernel:
        return None, False
    k = re.sub(r"\([^)]*\)", "", kernel.lower())  # the ISA in parentheses may say bf16 (avx512_core_bf16)
    emulated = "emulated" in k
    if not emulated and "bf16" in k:
        return "onednn_bf16", False
    if "onednn" in k:
        return "onednn_sgemm", emulated
    if "openblas" in k:
        return "openblas_sgemm", emulated
    return None, emulated


def drop_set(importance, k):
    """The k lowest-importance layers (ties: the lower index first), as a sorted list."""
    return sorted(int(i) for i in np.argsort(importance, kind="stable")[:k])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--calibration", help="the calibration file used (default WORK/calib.jsonl)")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--contenders", default="droptrace-f32 droptrace-bf16 pytorch-f32 pytorch-bf16 llmdrop-bf16")
    ap.add_argument("--droptrace", required=True)
    ap.add_argument("--built", help="what was built and when (run.sh records it at build time)")
    ap.add_argument("--command", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--output", required=True)
    args = ap.parse_args()

    contenders = args.contenders.split()
    peaks = json.load(open(os.path.join(args.results, "peaks.json")))
    units = peaks.get("units", {})
    unit_peak = {u: v.get("peak_gflops") or float("nan") for u, v in units.items()}
    # what the unit keeps up over seconds of back-to-back products (gemm_peak's "sustained" entry)
    unit_sustained = {u: (v.get("sustained") or {}).get("gflops") or float("nan") for u, v in units.items()}
    best_f32_peak = max([unit_peak.get(u, float("nan")) for u in ["openblas_sgemm", "onednn_sgemm"]
                         if not bad(unit_peak.get(u))], default=float("nan"))
    calib_path = args.calibration or os.path.join(args.work, "calib.jsonl")
    calib = [json.loads(l)["input_ids"] for l in open(calib_path) if l.strip()]
    tokens, seq_len = sum(map(len, calib)), len(calib[0])
    cpu = read_cpu(args.results)

    lines, summary, problems, raw, targets = [], [], [], [], []
    kernels = {}  # precision -> set of matrix_kernel descriptions seen
    for model in args.models.split():
        cfg = json.load(open(os.path.join(args.work, model, "config.json")))
        total_flops, proj, attn = flops(cfg, tokens, seq_len)
        L, d = cfg["num_hidden_layers"], cfg["hidden_size"]
        tools = []
        for c in contenders:
            tools += [f"{c}-{t}" for t in LLMDROP_TARGETS] if c.startswith("llmdrop-") else [c]
        runs = {t: load_runs(args.results, model, t) for t in tools}
        for t, rs in runs.items():
            for r in rs:
                if not r["ok"]:
                    problems.append(f"{model} {t} rep {r['rep']} failed (exit {r.get('exit')}), see results/{model}.{t}.{r['rep']}.log")
            if not rs:
                problems.append(f"{model} {t}: no run recorded")
        good = {t: [r for r in rs if r["ok"]] for t, rs in runs.items()}
        # clean: other processes used at most max(2 s, 10% of the wall time) of CPU meanwhile
        clean = {t: [r for r in rs if r["other_cpu_s"] <= max(2.0, 0.1 * r["wall"])] for t, rs in good.items()}
        ok = {t: clean[t] or good[t] for t in tools}
        for t in tools:
            if good[t] and not clean[t]:
                problems.append(f"{model} {t}: no run free of other processes' load; medians over disturbed runs")
        raw.append((model, runs))

        def secs(tool, key=None):
            return [r["wall"] if key is None else r["out"]["seconds"][key] for r in ok.get(tool, [])]

        def summed(c, key=None):
            """LLM-Drop: its three runs' medians (and mins, maxes) added up."""
            parts = [spread(secs(f"{c}-{t}", key)) for t in LLMDROP_TARGETS]
            return tuple(sum(p[i] for p in parts) for i in range(3))

        per_m = 1e6 / tokens
        rows, dt, pt = [], {}, {}
        # droptrace: whole process; its store tells the precision it ran in and the kernel it chose
        for p in PRECISIONS:
            c = f"droptrace-{p}"
            if c not in contenders:
                continue
            st = spread(secs(c))
            store = None
            if ok[c]:
                store = read_h5(os.path.join(args.results, f"{model}.{c}.{ok[c][0]['rep']}.h5"))
                if store["precision"] != p:
                    problems.append(f"{model} {c}: its store records precision {store['precision']}"
                                    + ("" if store["precision_recorded"] else " (no precision attribute)")
                                    + f", not {p}: the binary did not run in {p}")
                kernels.setdefault(p, set()).add(store["matrix_kernel"] or "not recorded")
            rss = max([r["rss_gb"] for r in good[c] if "rss_gb" in r], default=float("nan"))
            gflops = total_flops / st[0] / 1e9
            unit, emulated = unit_of(store and store["matrix_kernel"])
            wrong = (f"not measured: droptrace did not run in {p} (its store says {store['precision']})"
                     if store and store["precision"] != p else None)
            dt[p] = dict(time=st, rss=rss, store=store, gflops=gflops, unit=unit, emulated=emulated, wrong=wrong,
                         unit_peak=unit_peak.get(unit, float("nan")) if unit else float("nan"),
                         unit_sustained=unit_sustained.get(unit, float("nan")) if unit else float("nan"))
            rows.append((f"droptrace score `--precision {p}` (1 pass)", st, st, None, rss, "whole process"))
        for p in PRECISIONS:
            c = f"pytorch-{p}"
            if c not in contenders:
                continue
            st_incl, st_excl = spread(secs(c, "total_including_load")), spread(secs(c, "total_excluding_load"))
            rss = max([r["rss_gb"] for r in good[c] if "rss_gb" in r], default=float("nan"))
            load = spread([r["out"]["seconds"]["import"] + r["out"]["seconds"]["load"] for r in ok[c]])[0]
            pt[p] = dict(time=st_incl, excl=st_excl, rss=rss, load=load, out=ok[c][0]["out"] if ok[c] else None)
            dtype = "float32" if p == "f32" else "bfloat16"
            rows.append((f"PyTorch hooked, {dtype} (1 batched pass)", spread(secs(c)), st_incl, st_excl, rss, None))
        ld = {}
        for p in PRECISIONS:
            c = f"llmdrop-{p}"
            if c not in contenders:
                continue
            st_incl = summed(c, "total_including_load")
            rss = max([r["rss_gb"] for t in LLMDROP_TARGETS for r in good[f"{c}-{t}"] if "rss_gb" in r], default=float("nan"))
            outs = {t: ok[f"{c}-{t}"][0]["out"] for t in LLMDROP_TARGETS if ok[f"{c}-{t}"]}
            ld[p] = dict(time=st_incl, rss=rss, outs=outs,
                         parts={t: spread(secs(f"{c}-{t}", "total_including_load")) for t in LLMDROP_TARGETS})
            dtype = "float32" if p == "f32" else "bfloat16"
            rows.append((f"LLM-Drop procedure, {dtype} (3 runs: attn + mlp + block)", summed(c), st_incl,
                         summed(c, "total_excluding_load"), rss, None))

        def ratio(a, b):
            return a["time"][0] / b["time"][0] if a and b else float("nan")

        # accuracy
        diffs = {}   # label -> {kind: max |diff|}
        def diff_row(label, a, b, keys=("attention", "mlp", "block", "block_gap")):
            if a is not None and b is not None:
                diffs[label] = {k: max_diff(a[k], b[k]) for k in keys if k in a and k in b}
        stores = {p: dt[p]["store"] for p in dt if dt[p]["store"]}
        pouts = {p: pt[p]["out"] for p in pt if pt[p]["out"]}
        diff_row("droptrace bf16 − droptrace f32", stores.get("bf16"), stores.get("f32"))
        diff_row("PyTorch bfloat16 − PyTorch float32 (reference)", pouts.get("bf16"), pouts.get("f32"))
        diff_row("droptrace f32 − PyTorch float32", stores.get("f32"), pouts.get("f32"))
        diff_row("droptrace bf16 − PyTorch bfloat16", stores.get("bf16"), pouts.get("bf16"))
        for p in PRECISIONS:
            if p in ld and stores.get(p):
                merged = {}
                for t, o in ld[p]["outs"].items():
                    merged.update({k: o[k] for k in ("attention", "mlp", "block", "block_gap") if k in o})
                diff_row(f"droptrace {p} − LLM-Drop {'float32' if p == 'f32' else 'bfloat16'}", stores[p], merged)
        f32_ref = diffs.get("droptrace f32 − PyTorch float32")
        if f32_ref is not None and not (max(f32_ref.values()) <= 1e-3):
            problems.append(f"{model}: droptrace f32 vs PyTorch float32 max |diff| = {fmt_e(max(f32_ref.values()))} (expected <= 1e-3)")
        bf16_vs_f32 = diffs.get("droptrace bf16 − droptrace f32")
        bf16_worst = max((bf16_vs_f32[k] for k in KINDS), default=float("nan")) if bf16_vs_f32 else float("nan")

        # drop sets: the lowest-importance 25% / 50% of each kind, f32 vs bf16
        drop_rows, drop_same, drop_total = [], 0, 0
        if "f32" in stores and "bf16" in stores:
            for kind in KINDS:
                a, b = stores["f32"][kind], stores["bf16"][kind]
                for frac in DROP_FRACTIONS:
                    k = max(1, int(frac * L))
                    sa, sb = drop_set(a, k), drop_set(b, k)
                    drop_total += 1
                    same = sa == sb
                    drop_same += same
                    order = np.sort(a)
                    margin = float(order[k] - order[k - 1]) if k < L else float("nan")
                    drop_rows.append(f"| {kind} | {int(frac*100)}% ({k} of {L}) | {sa} | "
                                     + ("identical" if same else f"**differs**: bf16 {sb}") + f" | {fmt_e(margin)} |")

        lines += [
            f"### {model}: hidden {d}, {L} layers, {cfg['num_attention_heads']} heads, "
            f"{cfg.get('num_key_value_heads')} KV heads, intermediate {cfg['intermediate_size']}, "
            f"vocab {cfg['vocab_size']}, bfloat16 weights",
            "",
            f"{tokens} calibration tokens ({len(calib)} × {seq_len}); {args.threads} threads; "
            f"medians (min–max) of {max((len(v) for v in runs.values()), default=0)} alternating runs (of the undisturbed ones; "
            f"LLM-Drop: its three runs' medians, mins and maxes added up). Analytic FLOPs: {total_flops/1e12:.3f} TFLOP "
            f"({proj/1e6:.2f} MFLOP projections + {attn/1e6:.2f} MFLOP causal attention per token per layer).",
            "",
            "| | wall s (process) | s incl. load (in-process) | s excl. load | peak RSS GB | s / M tokens (median) | droptrace f32 ÷ this | droptrace bf16 ÷ this |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, wall, incl, excl, rss, note in rows:
            r32 = dt["f32"]["time"][0] / incl[0] if "f32" in dt else float("nan")
            r16 = dt["bf16"]["time"][0] / incl[0] if "bf16" in dt else float("nan")
            lines.append(f"| {name} | {fmt_s(wall)} | {note or fmt_s(incl)} | {fmt_s(excl) if excl else 'n/a'} | {fmt(rss)} | "
                         f"{fmt(incl[0]*per_m, 1)} | {fmt(r32, 3)} | {fmt(r16, 3)} |")
        lines.append("")
        for p, x in dt.items():
            kernel = x["store"]["matrix_kernel"] if x["store"] else None
            where = (f"{UNIT_NAMES[x['unit']]} peak {fmt(x['unit_peak'], 1)} GFLOP/s" if x["unit"]
                     else "unknown unit (matrix_kernel not recorded or not recognised)")
            lines.append(f"- droptrace {p}: kernel `{kernel or 'not recorded'}`; {fmt(x['gflops'], 1)} GFLOP/s over its whole "
                         f"process (load included) = **{fmt(100*x['gflops']/x['unit_peak'], 0)}%** of the {where}"
                         + (" (bf16 emulated on the f32 unit)" if x["emulated"] else "")
                         + f"; {fmt(100*x['gflops']/x['unit_sustained'], 0)}% of what it sustains ({fmt(x['unit_sustained'], 1)})"
                         + f"; {fmt(100*x['gflops']/best_f32_peak, 0)}% of the best f32 peak measured ({fmt(best_f32_peak, 1)}).")
            if p in pt and not bad(x["unit_sustained"]):
                floor = total_flops / x["unit_sustained"] / 1e9
                lines.append(f"  Its products alone, at the unit's sustained {fmt(x['unit_sustained'], 1)} GFLOP/s, take "
                             f"{fmt(floor, 1)} s = {fmt(floor / pt[p]['time'][0], 3)} × PyTorch {p}'s total: no {p} run on "
                             "this unit can be faster than that, before loading, norms, softmax and cosines.")
        for p, x in pt.items():
            lines.append(f"- PyTorch {p}: {fmt(x['load'])} s of its included-load total is interpreter start, imports and "
                         f"model load; its compute alone runs at {fmt(total_flops/x['excl'][0]/1e9, 1)} GFLOP/s.")
        for p, x in ld.items():
            lines.append(f"- LLM-Drop {p} runs (s incl. load): "
                         + ", ".join(f"{t} {fmt_s(v)}" for t, v in x["parts"].items()) + ".")
        lines.append("- Runs free of other processes' load (used for the medians): "
                     + ", ".join(f"{t} {len(clean[t])}/{len(runs[t])}" for t in tools) + "; every run is listed under Raw runs.")
        lines.append("")
        if diffs:
            lines += ["Largest absolute differences of the scores (block_gap: every pair of block boundaries):", "",
                      "| | attention | mlp | block | block_gap |", "| --- | ---: | ---: | ---: | ---: |"]
            for label, dd in diffs.items():
                lines.append(f"| {label} | " + " | ".join(fmt_e(dd.get(k)) for k in ("attention", "mlp", "block", "block_gap")) + " |")
            lines.append("")
        if drop_rows:
            lines += ["Drop sets: the lowest-importance layers (blocks) chosen from droptrace's f32 and bf16 scores; "
                      "margin = the f32 importance gap between the last layer in the set and the first one out of it "
                      "(a bf16 difference smaller than the margin cannot change the set).", "",
                      "| importance | dropped | f32 set | bf16 | f32 margin |", "| --- | --- | --- | --- | ---: |"]
            lines += drop_rows + [""]

        # targets of this model
        def status(ok_, measured, timed=()):
            disturbed = [t for t in timed if good.get(t) and not clean.get(t)]
            return measured, ("**met**" if ok_ else "**not met**") + (
                f" (timed while other processes ran: {', '.join(disturbed)}; see Problems)" if disturbed else "")

        def raced(x):
            """Whether droptrace emulated bf16 because it timed the f32 unit faster than the bf16 matmul."""
            return x["emulated"] and "timed faster here" in ((x["store"] or {}).get("matrix_kernel") or "")

        def timed_faster():
            return (f"which droptrace timed faster here than the bf16 matmul: peaks {fmt(unit_peak.get('onednn_sgemm'), 1)} "
                    f"and {fmt(unit_peak.get('onednn_bf16'), 1)} GFLOP/s in this run")

        def speed_target(p):
            name = f"droptrace {p} ≤ {TARGET_SPEED} × PyTorch {'float32' if p == 'f32' else 'bfloat16'} (whole process vs in-process incl. load)"
            if p not in dt or p not in pt:
                return name, "—", "not measured: contender not selected (-c)"
            r = ratio(dt[p], pt[p])
            floor = total_flops / dt[p]["unit_sustained"] / 1e9 / pt[p]["time"][0]
            measured = (f"{fmt(r, 3)} ({fmt(dt[p]['time'][0])} s ÷ {fmt(pt[p]['time'][0])} s"
                        + ("" if bad(floor) else f"; the products alone at the unit's sustained peak: {fmt(floor, 3)}") + ")")
            if bad(r):
                return name, measured, "not measured: no successful run"
            if dt[p]["wrong"]:
                return name, measured, dt[p]["wrong"]
            if p == "bf16" and not cpu["bf16_units"]:
                return name, measured, "not measurable: this CPU has no bf16 units (AMX / AVX512-BF16)"
            m, st = status(r <= TARGET_SPEED, measured, (f"droptrace-{p}", f"pytorch-{p}"))
            if p == "bf16" and dt[p]["unit"] != "onednn_bf16":
                st += (f" (on the f32 unit, {timed_faster()})" if raced(dt[p]) else " (droptrace did not use the bf16 units)")
            return name, m, st
        targets.append((model,) + speed_target("f32"))
        targets.append((model,) + speed_target("bf16"))
        if model == "mid":
            for p in PRECISIONS:
                name = f"droptrace {p} ≥ {int(TARGET_PEAK*100)}% of the peak of the unit in use (whole score run)"
                if p not in dt:
                    targets.append((model, name, "—", "not measured: contender not selected (-c)"))
                    continue
                x = dt[p]
                share = x["gflops"] / x["unit_peak"]
                # the target is judged on the median run; single runs show how much the machine moved it
                fastest, slowest = (share * x["time"][0] / t for t in x["time"][1:])
                measured = (f"{fmt(100*share, 0)}% ({fmt(x['gflops'], 1)} of {fmt(x['unit_peak'], 1)} GFLOP/s, "
                            f"{UNIT_NAMES.get(x['unit'], 'unit unknown')}; single runs "
                            f"{fmt(100*slowest, 0)}–{fmt(100*fastest, 0)}%; "
                            f"{fmt(100*x['gflops']/x['unit_sustained'], 0)}% of the {fmt(x['unit_sustained'], 1)} it sustains)")
                if x["wrong"]:
                    targets.append((model, name, measured, x["wrong"]))
                elif not x["unit"] or bad(share):
                    targets.append((model, name, measured, "not measured: kernel or peak unknown"))
                elif p == "bf16" and x["emulated"] and raced(x):
                    # The unit in use is the f32 one, chosen because it outran the bf16 matmul here.
                    m, st = status(share >= TARGET_PEAK, measured + ", bf16 emulated", (f"droptrace-{p}",))
                    targets.append((model, name, m, st + f" (the f32 unit, {timed_faster()})"))
                elif p == "bf16" and x["emulated"]:
                    targets.append((model, name, measured + ", bf16 emulated",
                                    "not measurable: this CPU has no bf16 units (shown against the f32 unit's peak)"
                                    if not cpu["bf16_units"] else "**not met**: bf16 emulated on a CPU with bf16 units"))
                else:
                    targets.append((model, name) + status(share >= TARGET_PEAK, measured, (f"droptrace-{p}",)))
        name = "bf16 importance within 5e-4 of f32 (attention, mlp, block)"
        wrong = next((dt[p]["wrong"] for p in dt if dt[p]["wrong"]), None)
        if bf16_vs_f32 is None:
            targets.append((model, name, "—", "not measured: needs droptrace-f32 and droptrace-bf16"))
        elif wrong:
            targets.append((model, name, fmt_e(bf16_worst), wrong))
        else:
            ref = diffs.get("PyTorch bfloat16 − PyTorch float32 (reference)")
            ref_worst = max((ref[k] for k in KINDS), default=float("nan")) if ref else float("nan")
            measured = fmt_e(bf16_worst) + (f" (PyTorch bf16 vs float32: {fmt_e(ref_worst)})" if ref else "")
            targets.append((model, name) + status(bf16_worst <= TARGET_BF16_DIFF, measured))
        name = "identical drop sets, f32 vs bf16, at 25% and 50% (attention, mlp, block)"
        if not drop_total:
            targets.append((model, name, "—", "not measured: needs droptrace-f32 and droptrace-bf16"))
        elif wrong:
            targets.append((model, name, f"{drop_same} of {drop_total} identical", wrong))
        else:
            targets.append((model, name) + status(drop_same == drop_total, f"{drop_same} of {drop_total} identical"))
        if model == "tiny":
            for p in PRECISIONS:
                name = f"peak RSS of droptrace {p} on the 1.1B shape ≤ {TARGET_RSS_GB} GB"
                if p not in dt or bad(dt[p]["rss"]):
                    targets.append((model, name, "—", "not measured: contender not selected (-c) or runs failed"))
                else:
                    targets.append((model, name) + status(dt[p]["rss"] <= TARGET_RSS_GB, f"{fmt(dt[p]['rss'])} GB"))

        summary.append(dict(model=model, dt=dt, pt=pt, ld=ld, bf16_diff=bf16_worst,
                            drop=f"{drop_same}/{drop_total}" if drop_total else "n/a",
                            f32_diff=max(f32_ref.values()) if f32_ref else float("nan")))

    for m in ["mid", "tiny"]:
        if m not in args.models.split():
            targets.append((m, "every target on this model", "—", "not measured: model not in this run (-m)"))

    swift = sh("swift --version 2>&1 | head -1")
    torch_v = sh(f"{args.python} -c 'import torch; print(torch.__version__)'")
    tf_v = sh(f"{args.python} -c 'import transformers; print(transformers.__version__)'")
    st_v = sh(f"{args.python} -c 'import safetensors; print(safetensors.__version__)'")
    ob_v = sh("dpkg-query -W -f='${Version}' libopenblas0-pthread 2>/dev/null || dpkg-query -W -f='${Version}' libopenblas0")
    mem = sh("free -g | awk '/Mem:/ {print $2}'")
    dver = sh(f"{args.droptrace} --version 2>/dev/null")
    built = args.built or ("commit " + sh("git rev-parse --short HEAD")
                           + (" + uncommitted changes" if sh("git status --porcelain -- Sources Package.swift") else "")
                           + " (at report time)")
    onednn, openblas = peaks.get("onednn", {}), peaks.get("openblas", {})
    bf16_unit = units.get("onednn_bf16", {})
    flags = ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in cpu["flags"].items())
    smoke = len(calib) < 16

    head = [
        "# droptrace benchmark results",
        "",
        "Generated by `bench/run.sh` (see `bench/README.md`); raw per-process results are in `bench/work/results/` (not committed).",
        "",
    ]
    if smoke:
        head += [f"**Smoke run** ({len(calib)} calibration sequence(s) instead of 16, `SAMPLES`): it checks the pipeline; "
                 "its times are not a benchmark and its targets are not evidence.", ""]
    head += [
        "Reproduce:",
        "",
        "```sh",
        args.command,
        "```",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: nproc {sh('nproc')}, {mem} GB RAM, {platform.system()} {platform.release()}"
        + (" (virtual machine: hypervisor flag)" if cpu["hypervisor"] else ""),
        f"- CPU: {cpu['name']} (family {cpu['family']}, model {cpu['model']}, stepping {cpu['stepping']}); flags: {flags}; "
        + ("**has bf16 units**" if cpu["bf16_units"] else "**no bf16 units** (no AVX512-BF16, no AMX)"),
        f"- droptrace {dver or '?'}: {built}; {swift}",
        "- Kernels droptrace chose (store attribute `matrix_kernel`): "
        + ("; ".join(f"{p}: " + ", ".join(f"`{k}`" for k in sorted(ks)) for p, ks in kernels.items()) or "none recorded"),
        f"- OpenBLAS {ob_v} (Debian): core `{openblas.get('corename', '?')}`, config `{openblas.get('config', '?')}`",
        f"- oneDNN {onednn.get('version', '?')}: effective ISA `{onednn.get('isa', '?')}`; bf16 matmul implementation "
        f"`{bf16_unit.get('impl_plain', '?')}` (weights as stored), `{bf16_unit.get('impl_packed', '?')}` (weights packed)"
        + (f"; error: {bf16_unit['error']}" if bf16_unit.get("error") else ""),
        f"- Peaks measured in this run, {args.threads} threads: "
        + ", ".join(f"{UNIT_NAMES.get(u, u)} {fmt(unit_peak.get(u), 1)} GFLOP/s"
                    + ("" if bad(unit_sustained.get(u)) else f" ({fmt(unit_sustained[u], 1)} sustained)") for u in units)
        + " (shapes under Peaks)",
        f"- torch {torch_v}, transformers {tf_v}, safetensors {st_v}, Python {(sh(args.python + ' -V 2>&1').split() or ['?'])[-1]}",
        "",
        "## Targets (issue #15)",
        "",
        f"Same machine, same run, {args.threads} threads, droptrace as installed with no environment tuning "
        "(run.sh clears OPENBLAS_CORETYPE, *_NUM_THREADS, oneDNN ISA limits before running it). "
        "Times: medians; the PyTorch side is its in-process total including interpreter start, imports and model load.",
        "",
        "| model | target | measured | status |",
        "| --- | --- | --- | --- |",
    ]
    head += [f"| {m} | {n} | {v} | {s} |" for m, n, v, s in targets]
    head += [
        "",
        "## What is compared",
        "",
        "- **droptrace score** `--precision f32` and `--precision bf16`: one layer-by-layer pass giving attention, MLP and"
        " block importance and block_gap; whole-process wall time (reading the bfloat16 checkpoint included, HDF5 written),"
        " `--threads N`. The precision and the kernel are read back from the store's root attributes.",
        "- **PyTorch hooked** (`bench/pytorch_hooked.py --dtype float32|bfloat16`): `inference_mode`, sdpa, `AutoModel`, all"
        " sequences in one batch, hooks on each decoder layer, its `self_attn` and `post_attention_layernorm`; the same"
        " four results from one forward pass. bfloat16 = the model loaded in bfloat16 as LLM-Drop does (residual stream"
        " in bfloat16; cosines in float32). Its in-process total including interpreter start, imports and model load"
        " is what droptrace's whole process is compared against.",
        "- **LLM-Drop procedure** (`bench/llmdrop_procedure.py --dtype bfloat16|float32`): three separate processes as"
        " LLM-Drop's `layer_drop.sh` (attn), `layer_drop.sh` (mlp) and `block_drop.sh` (consecutive) run it: each loads the"
        " model, captures layer-0 inputs per sample, runs the model layer by layer over samples one at a time (batch 1)"
        " and keeps copies of the hooked states; bfloat16 as its scripts run it (`--bf16`), sdpa, same threads. Its time"
        " is the sum of the three.",
        "- Runs alternate the contenders within each repetition (droptrace, PyTorch, LLM-Drop, in the order of `-c`).",
        "- Peaks (`bench/gemm_peak.c`): C = A·Bᵀ in float32 out, square 2048³ and the models' projection shapes over 8192"
        " tokens, best of `PEAK_REPS` (3) after a warm-up, with OPENBLAS_NUM_THREADS = OMP_NUM_THREADS = threads. The \"% of peak\" target"
        " uses the unit the store's `matrix_kernel` names (OpenBLAS or oneDNN f32, or the bf16 matmul) and is judged against"
        " that burst peak. \"Sustained\": each unit's best shape run back to back for `PEAK_SUSTAIN_SECONDS` (20), FLOPs over"
        " total time: the rate a score run's seconds-to-minutes of products can keep (clock under sustained load, and"
        " on a virtual machine what the host takes meanwhile). FLOPs ÷ that rate is a floor no run on the unit can beat.",
        "",
        "FLOPs (analytic, per token per decoder layer; d hidden, I intermediate, h heads, kv KV heads, dh = d/h, S sequence length):"
        " `2·d·(h·dh + 2·kv·dh) + 2·h·dh·d + 2·3·d·I` for the projections plus `2·2·dh·h·(S+1)/2` for QKᵀ and P·V over"
        " the causal half only (the masked half is **not** counted; counting it would add ~2·dh·h·S). Norms, rotary, softmax,"
        " SiLU, residual adds and cosines are not counted; no LM head. GFLOP/s = FLOPs ÷ droptrace's whole-process wall time.",
        "",
        "## Summary",
        "",
        "Seconds: median (min–max); droptrace whole process, PyTorch and LLM-Drop in-process including load.",
        "",
        "| model | droptrace f32 s | droptrace bf16 s | PyTorch f32 s | PyTorch bf16 s | LLM-Drop bf16 s | LLM-Drop f32 s | "
        "dt f32 ÷ PyTorch f32 | dt bf16 ÷ PyTorch bf16 | dt bf16 ÷ LLM-Drop bf16 | dt f32 % of unit peak | dt bf16 % of unit peak | "
        "max abs diff dt bf16 vs f32 | identical drop sets | max abs diff dt f32 vs PyTorch f32 |",
        "| --- | " + " | ".join(["---:"] * 14) + " |",
    ]
    for s in summary:
        dt, pt, ld = s["dt"], s["pt"], s["ld"]

        def t(x, p):
            return fmt_s(x[p]["time"]) if p in x else "—"

        def r(a, b):
            return fmt(a["time"][0] / b["time"][0], 3) if a and b else "—"

        def share(p):
            return "—" if p not in dt else "n/a" if bad(v := 100 * dt[p]["gflops"] / dt[p]["unit_peak"]) else f"{fmt(v, 0)}%"
        head.append(f"| {s['model']} | {t(dt, 'f32')} | {t(dt, 'bf16')} | {t(pt, 'f32')} | {t(pt, 'bf16')} | "
                    f"{t(ld, 'bf16')} | {t(ld, 'f32')} | {r(dt.get('f32'), pt.get('f32'))} | {r(dt.get('bf16'), pt.get('bf16'))} | "
                    f"{r(dt.get('bf16'), ld.get('bf16'))} | {share('f32')} | {share('bf16')} | {fmt_e(s['bf16_diff'])} | "
                    f"{s['drop']} | {fmt_e(s['f32_diff'])} |")
    head += ["", "## Peaks", "", f"GFLOP/s, {args.threads} threads, best of {peaks.get('reps', '?')} after a warm-up (sustained: the best shape "
             "run back to back, FLOPs over total time); m tokens, n outputs, k inputs.", "",
             "| unit | m×n×k | B | GFLOP/s |", "| --- | --- | --- | ---: |"]
    for u, v in units.items():
        for sh_ in v.get("shapes", []):
            head.append(f"| {UNIT_NAMES.get(u, u)} | {sh_['m']}×{sh_['n']}×{sh_['k']} | {sh_.get('variant', 'plain')} | {fmt(sh_['gflops'], 1)} |")
        if (su := v.get("sustained")):
            head.append(f"| {UNIT_NAMES.get(u, u)} | {su['m']}×{su['n']}×{su['k']} | {su.get('variant', 'plain')}, sustained "
                        f"({su['runs']} runs, {fmt(su['seconds'], 1)} s) | {fmt(su['gflops'], 1)} |")
    head += ["", "## Per model", ""]
    tail = ["## Raw runs", "",
            "Wall time of each process (s), its own CPU time (user+sys, s), other processes' CPU time meanwhile (s), peak RSS (GB).",
            "", "| model | run | rep | wall | own CPU | others' CPU | peak RSS |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for model, runs in raw:
        for t, rs in runs.items():
            for r in rs:
                tail.append(f"| {model} | {t} | {r['rep']} | {fmt(r['wall'])} | {fmt(r.get('cpu_s'), 1)} | {fmt(r['other_cpu_s'], 1)} | {fmt(r.get('rss_gb'))} |"
                            + ("" if r["ok"] else " failed"))
    tail.append("")
    if problems:
        tail += ["## Problems", ""] + [f"- {p}" for p in problems] + [""]
    text = "\n".join(head + lines + tail)
    with open(args.output, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
