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

TOOLS = ["droptrace", "pytorch", "llmdrop-attn", "llmdrop-mlp", "llmdrop-block"]


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
    try:
        text = open(base + ".json").read()
        run["out"] = json.loads(text) if text.strip() else {}  # droptrace prints nothing on stdout
    except (OSError, ValueError):
        run["out"] = {"failed": True}
    run["ok"] = run.get("exit") == 0 and not run["out"].get("failed")
    return run


def read_h5(path):
    with h5py.File(path) as f:
        return {"attention": f["scores/attention"][0].astype(np.float64),
                "mlp": f["scores/mlp"][0].astype(np.float64),
                "block": f["scores/block"][0].astype(np.float64),
                "block_gap": f["similarity/block_gap"][0].astype(np.float64)}


def as_array(x):
    return np.array([[np.nan if v is None else v for v in row] for row in x] if isinstance(x[0], list)
                    else [np.nan if v is None else v for v in x], dtype=np.float64)


def max_diff(a, b):
    a, b = as_array(a) if isinstance(a, list) else a, as_array(b) if isinstance(b, list) else b
    if a.shape != b.shape:
        return float("nan")
    both = ~np.isnan(a) & ~np.isnan(b)
    if (np.isnan(a) != np.isnan(b)).any():
        return float("inf")
    return float(np.abs(a[both] - b[both]).max())


def med(values):
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(values) if values else float("nan")


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=60).stdout.strip()
    except Exception:
        return ""


def fmt(x, digits=2):
    if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))):
        return "n/a"
    return f"{x:.{digits}f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--reps", type=int, required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--droptrace", required=True)
    ap.add_argument("--built", help="what was built and when (run.sh records it at build time)")
    ap.add_argument("--command", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--output", required=True)
    args = ap.parse_args()

    sgemm = json.load(open(os.path.join(args.results, "sgemm.json")))
    peak = sgemm["peak_gflops"]
    calib = [json.loads(l)["input_ids"] for l in open(os.path.join(args.work, "calib.jsonl")) if l.strip()]
    tokens, seq_len = sum(map(len, calib)), len(calib[0])

    lines, summary, problems, raw = [], [], [], []
    for model in args.models.split():
        cfg = json.load(open(os.path.join(args.work, model, "config.json")))
        total_flops, proj, attn = flops(cfg, tokens, seq_len)
        runs = {t: [load_run(args.results, model, t, r) for r in range(1, args.reps + 1)] for t in TOOLS}
        runs = {t: [r for r in rs if r] for t, rs in runs.items()}
        for t, rs in runs.items():
            for i, r in enumerate(rs):
                if not r["ok"]:
                    problems.append(f"{model} {t} rep {i+1} failed (exit {r.get('exit')}), see bench/work/results/{model}.{t}.{i+1}.log")
        good = {t: [r for r in rs if r["ok"]] for t, rs in runs.items()}
        # clean: other processes used at most max(2 s, 10% of the wall time) of CPU meanwhile
        clean = {t: [r for r in rs if r["other_cpu_s"] <= max(2.0, 0.1 * r["wall"])] for t, rs in good.items()}
        ok = {t: clean[t] or good[t] for t in TOOLS}
        for t in TOOLS:
            if good[t] and not clean[t]:
                problems.append(f"{model} {t}: no run free of other processes' load; medians over disturbed runs")

        def m(tool, key=None):
            return med([r["wall"] if key is None else r["out"]["seconds"][key] for r in ok[tool]])

        dt_wall = m("droptrace")
        dt_rss = max([r["rss_gb"] for r in good["droptrace"]], default=float("nan"))
        pt_wall, pt_incl, pt_excl = m("pytorch"), m("pytorch", "total_including_load"), m("pytorch", "total_excluding_load")
        pt_load = med([r["out"]["seconds"]["import"] + r["out"]["seconds"]["load"] for r in ok["pytorch"]])
        pt_rss = max([r["rss_gb"] for r in good["pytorch"]], default=float("nan"))
        # LLM-Drop: the sum over its three runs of each run's median
        ld_wall = sum(m(t) for t in TOOLS[2:])
        ld_incl = sum(m(t, "total_including_load") for t in TOOLS[2:])
        ld_excl = sum(m(t, "total_excluding_load") for t in TOOLS[2:])
        ld_rss = max([r["rss_gb"] for t in TOOLS[2:] for r in good[t]], default=float("nan"))
        ld_parts = {t: m(t, "total_including_load") for t in TOOLS[2:]}
        raw.append((model, runs))

        gflops = total_flops / dt_wall / 1e9
        per_m = 1e6 / tokens
        counts = {t: f"{len(clean[t])}/{len(runs[t])}" for t in TOOLS}

        # accuracy: droptrace (first good rep) vs the PyTorch hooked pass (first good rep)
        acc = {}
        if ok["droptrace"] and ok["pytorch"]:
            rep = runs["droptrace"].index(ok["droptrace"][0]) + 1
            dt = read_h5(os.path.join(args.results, f"{model}.droptrace.{rep}.h5"))
            pt = ok["pytorch"][0]["out"]
            for key in ["attention", "mlp", "block", "block_gap"]:
                acc[key] = max_diff(dt[key], pt[key])
            ld = {}
            if ok["llmdrop-attn"]:
                ld["attention"] = ok["llmdrop-attn"][0]["out"]["attention"]
            if ok["llmdrop-mlp"]:
                ld["mlp"] = ok["llmdrop-mlp"][0]["out"]["mlp"]
            if ok["llmdrop-block"]:
                ld["block"] = ok["llmdrop-block"][0]["out"]["block"]
                ld["block_gap"] = ok["llmdrop-block"][0]["out"]["block_gap"]
            acc_ld = {k: max_diff(dt[k], v) for k, v in ld.items()}
        else:
            acc_ld = {}
        worst = max(acc.values()) if acc else float("nan")
        if not acc or not (worst <= 1e-3):
            problems.append(f"{model}: droptrace vs PyTorch max |diff| = {fmt(worst, 6)} (expected <= 1e-3)")

        L, d = cfg["num_hidden_layers"], cfg["hidden_size"]
        lines += [
            f"### {model}: hidden {d}, {L} layers, {cfg['num_attention_heads']} heads, "
            f"{cfg.get('num_key_value_heads')} KV heads, intermediate {cfg['intermediate_size']}, "
            f"vocab {cfg['vocab_size']}, bfloat16",
            "",
            f"{tokens} calibration tokens ({len(calib)} × {seq_len}); {args.threads} threads; "
            f"medians of {args.reps} alternating runs (of the undisturbed ones; LLM-Drop: sum of its three runs' medians). Analytic FLOPs: {total_flops/1e12:.3f} TFLOP "
            f"({proj/1e6:.2f} MFLOP projections + {attn/1e6:.2f} MFLOP causal attention per token per layer).",
            "",
            "| | wall s (process) | s incl. load (in-process) | s excl. load | peak RSS GB | s / M tokens | droptrace ÷ this |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| droptrace score (1 pass) | {fmt(dt_wall)} | {fmt(dt_wall)} (whole process) | n/a | {fmt(dt_rss)} | {fmt(dt_wall*per_m, 1)} | 1 |",
            f"| PyTorch hooked (1 batched pass) | {fmt(pt_wall)} | {fmt(pt_incl)} | {fmt(pt_excl)} | {fmt(pt_rss)} | {fmt(pt_incl*per_m, 1)} | **{fmt(dt_wall/pt_incl, 3)}** |",
            f"| LLM-Drop procedure (3 runs: attn + mlp + block) | {fmt(ld_wall)} | {fmt(ld_incl)} | {fmt(ld_excl)} | {fmt(ld_rss)} | {fmt(ld_incl*per_m, 1)} | **{fmt(dt_wall/ld_incl, 3)}** |",
            "",
            f"- droptrace achieved {gflops:.1f} GFLOP/s over its whole process (load included) = "
            f"**{100*gflops/peak:.0f}%** of the measured OpenBLAS SGEMM peak ({peak:.1f} GFLOP/s, {args.threads} threads).",
            f"- PyTorch: {fmt(pt_load)} s of its included-load total is interpreter start, imports and model load; "
            f"its compute alone runs at {total_flops/pt_excl/1e9:.1f} GFLOP/s.",
            "- LLM-Drop runs (s incl. load, median): " + ", ".join(f"{t[8:]} {fmt(v)}" for t, v in ld_parts.items()) + ".",
            "- Max |droptrace − PyTorch|: " + ", ".join(f"{k} {v:.2e}" for k, v in acc.items())
            + (" (droptrace − LLM-Drop: " + ", ".join(f"{k} {v:.2e}" for k, v in acc_ld.items()) + ")" if acc_ld else "") + ".",
            "- Runs free of other processes' load (used for the medians): "
            + ", ".join(f"{t} {c}" for t, c in counts.items()) + "; every run is listed under Raw runs.",
            "",
        ]
        summary.append(dict(model=model, droptrace_s=dt_wall, pytorch_incl_s=pt_incl, llmdrop_incl_s=ld_incl,
                            ratio_pytorch=dt_wall / pt_incl, ratio_llmdrop=dt_wall / ld_incl,
                            gflops=gflops, peak_share=gflops / peak, max_abs_diff=acc))

    swift = sh("swift --version 2>&1 | head -1")
    torch_v = sh(f"{args.python} -c 'import torch; print(torch.__version__)'")
    tf_v = sh(f"{args.python} -c 'import transformers; print(transformers.__version__)'")
    st_v = sh(f"{args.python} -c 'import safetensors; print(safetensors.__version__)'")
    ob_v = sh("dpkg-query -W -f='${Version}' libopenblas0-pthread 2>/dev/null || dpkg-query -W -f='${Version}' libopenblas0")
    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-").strip()
    flags = sh("grep -m1 '^flags' /proc/cpuinfo")
    simd = ", ".join(f for f in ["avx2", "fma", "avx512f"] if re.search(rf"\b{f}\b", flags)) or "none of avx2/fma/avx512f"
    mem = sh("free -g | awk '/Mem:/ {print $2}'")
    dver = sh(f"{args.droptrace} --version 2>/dev/null")
    built = args.built or ("commit " + sh("git rev-parse --short HEAD")
                           + (" + uncommitted changes" if sh("git status --porcelain -- Sources Package.swift") else "")
                           + " (at report time)")

    head = [
        "# droptrace benchmark results",
        "",
        "Generated by `bench/run.sh` (see `bench/README.md`); raw per-process results are in `bench/work/results/` (not committed).",
        "",
        "Reproduce:",
        "",
        "```sh",
        args.command,
        "```",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {platform.node() and 'nproc ' + sh('nproc')}, CPU {cpu} ({simd}), {mem} GB RAM, {platform.system()} {platform.release()}",
        f"- droptrace {dver or '?'}: {built}, `swift build -c release`; {swift}",
        f"- torch {torch_v}, transformers {tf_v}, safetensors {st_v}, Python {sh(args.python + ' -V 2>&1').split()[-1]}",
        f"- OpenBLAS {ob_v} (Debian), config `{sgemm.get('openblas_config', '?')}`; SGEMM peak with {args.threads} threads "
        f"{peak:.1f} GFLOP/s (best of: " + ", ".join(f"{s['m']}×{s['n']}×{s['k']} {s['gflops']:.0f}" for s in sgemm["shapes"]) + ")",
        "",
        "## What is compared",
        "",
        "- **droptrace score**: one layer-by-layer pass giving attention, MLP and block importance and block_gap;"
        " whole-process wall time (reading the bfloat16 checkpoint included, HDF5 written), `--threads N`.",
        "- **PyTorch hooked** (`bench/pytorch_hooked.py`): float32, `inference_mode`, sdpa, `AutoModel`, all 16"
        " sequences in one batch, hooks on each decoder layer, its `self_attn` and `post_attention_layernorm`; the same"
        " four results from one forward pass. Its in-process total including interpreter start, imports and model load"
        " is what droptrace's whole process is compared against.",
        "- **LLM-Drop procedure** (`bench/llmdrop_procedure.py`): three separate processes as LLM-Drop's"
        " `layer_drop.sh` (attn), `layer_drop.sh` (mlp) and `block_drop.sh` (consecutive) run it: each loads the"
        " model, captures layer-0 inputs per sample, runs the model layer by layer over samples one at a time (batch 1)"
        " and keeps copies of the hooked states; float32, sdpa, same threads. Its time is the sum of the three.",
        "- Runs alternate droptrace, PyTorch, LLM-Drop attn, mlp, block within each repetition.",
        "",
        "FLOPs (analytic, per token per decoder layer; d hidden, I intermediate, h heads, kv KV heads, dh = d/h, S sequence length):"
        " `2·d·(h·dh + 2·kv·dh) + 2·h·dh·d + 2·3·d·I` for the projections plus `2·2·dh·h·(S+1)/2` for QKᵀ and P·V over"
        " the causal half only (the masked half is **not** counted; counting it would add ~2·dh·h·S). Norms, rotary, softmax,"
        " SiLU, residual adds and cosines are not counted; no LM head. GFLOP/s = FLOPs ÷ droptrace's whole-process wall time.",
        "",
        "## Summary",
        "",
        "| model | droptrace s | PyTorch s (incl. load) | LLM-Drop s (3 runs, incl. load) | droptrace ÷ PyTorch | droptrace ÷ LLM-Drop | droptrace GFLOP/s | % of SGEMM peak | max abs diff vs PyTorch |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in summary:
        head.append(f"| {s['model']} | {fmt(s['droptrace_s'])} | {fmt(s['pytorch_incl_s'])} | {fmt(s['llmdrop_incl_s'])} | "
                    f"{fmt(s['ratio_pytorch'], 3)} | {fmt(s['ratio_llmdrop'], 3)} | {fmt(s['gflops'], 1)} | "
                    f"{fmt(100*s['peak_share'], 0)}% | {max(s['max_abs_diff'].values()) if s['max_abs_diff'] else float('nan'):.1e} |")
    head += ["", "## Per model", ""]
    tail = ["## Raw runs", "",
            "Wall time of each process (s), its own CPU time (user+sys, s), other processes' CPU time meanwhile (s), peak RSS (GB).",
            "", "| model | run | rep | wall | own CPU | others' CPU | peak RSS |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for model, runs in raw:
        for t in TOOLS:
            for i, r in enumerate(runs[t]):
                tail.append(f"| {model} | {t} | {i+1} | {fmt(r['wall'])} | {fmt(r.get('cpu_s'), 1)} | {fmt(r['other_cpu_s'], 1)} | {fmt(r.get('rss_gb'))} |"
                            + ("" if r["ok"] else " failed"))
    tail.append("")
    if problems:
        tail += ["## Problems", ""] + [f"- {p}" for p in problems] + [""]
    text = "\n".join(head + lines + tail)
    with open(args.output, "w") as f:
        f.write(text)
    print(text)
    json.dump(summary, sys.stderr, indent=1, default=str)
    print(file=sys.stderr)


if __name__ == "__main__":
    main()
