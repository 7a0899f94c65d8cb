#!/usr/bin/env python3
"""Check a droptrace score file (HDF5) from the outside and print a summary.

Needs only h5py (3.x) and numpy. Exits non-zero, one line per problem, if the
file does not follow the published layout.

    python3 scripts/check_store.py scores.h5

Reading the file yourself:
    names = f["checkpoints/name"].asstr()[:]   # str; plain [:] gives UTF-8 bytes
    attention = f["scores/attention"][:]       # float32, shape (checkpoints, layers)
    f.attrs["model_type"]                      # str
    int(f.attrs["num_layers"])                 # stored as int64
"""
import re
import sys

import h5py
import numpy as np

STRING_ATTRS = ["model_type", "metric", "calibration_sha256", "droptrace_version"]
INT_ATTRS = ["num_layers", "calibration_tokens"]


def dataset_problems(f, expected, missing_note=""):
    """One line per dataset of `expected` ({path: (dtype, shape)}) that is
    missing from `f` or has another dtype or shape."""
    problems = []
    for name, (dtype, shape) in expected.items():
        ds = f.get(name)
        if not isinstance(ds, h5py.Dataset):
            problems.append(f"/{name} missing{missing_note}")
        elif ds.dtype != np.dtype(dtype) or ds.shape != shape:
            problems.append(f"/{name} is {ds.dtype} {ds.shape}, expected {dtype} {shape}")
    return problems


def check(path):
    problems = []
    with h5py.File(path, "r") as f:
        for name in STRING_ATTRS:
            if not isinstance(f.attrs.get(name), str):
                problems.append(f"root attribute {name} missing or not a string")
        for name in INT_ATTRS:
            if not isinstance(f.attrs.get(name), np.integer):
                problems.append(f"root attribute {name} missing or not an integer")
        # Optional: stores written before they were recorded lack them (precision f32).
        if "precision" in f.attrs and f.attrs["precision"] not in ("f32", "bf16"):
            problems.append("root attribute precision is not f32 or bf16")
        if "matrix_kernel" in f.attrs and not isinstance(f.attrs["matrix_kernel"], str):
            problems.append("root attribute matrix_kernel is not a string")
        if "hidden_size" in f.attrs and not (isinstance(f.attrs["hidden_size"], np.integer) and f.attrs["hidden_size"] > 0):
            problems.append("root attribute hidden_size is not a positive integer")
        shapes = f.attrs.get("layer_shapes_sha256")
        if shapes is not None and not (isinstance(shapes, str) and re.fullmatch(r"[0-9a-f]{64}", shapes)):
            problems.append("root attribute layer_shapes_sha256 is not 64 lowercase hex digits")
        if problems:
            return problems, None
        layers = int(f.attrs["num_layers"])

        names_ds = f.get("checkpoints/name")
        if names_ds is None or h5py.check_string_dtype(names_ds.dtype) is None:
            return problems + ["/checkpoints/name missing or not strings"], None
        count = names_ds.shape[0]
        expected = {
            "checkpoints/step": ("int64", (count,)),
            "checkpoints/tokens": ("int64", (count,)),
            "scores/attention": ("float32", (count, layers)),
            "scores/mlp": ("float32", (count, layers)),
            "scores/block": ("float32", (count, layers)),
            "similarity/block_gap": ("float32", (count, layers, layers)),
        }
        problems += dataset_problems(f, expected)
        # Optional: files written before fingerprints were recorded lack it.
        fingerprints = f.get("checkpoints/fingerprint")
        if fingerprints is not None and (
            not isinstance(fingerprints, h5py.Dataset)
            or h5py.check_string_dtype(fingerprints.dtype) is None
            or fingerprints.shape != (count,)
        ):
            problems.append(f"/checkpoints/fingerprint is not {count} strings")
        # Optional: files written before per-sequence sums existed lack them.
        tokens = f.get("per_sequence/tokens")
        if tokens is not None:
            if not isinstance(tokens, h5py.Dataset) or tokens.dtype != np.dtype("int64") or tokens.ndim != 2 \
                    or tokens.shape[0] != count or tokens.shape[1] < 1:
                problems.append(f"/per_sequence/tokens is not int64 ({count}, sequences)")
            else:
                sequences = tokens.shape[1]
                sums = {
                    f"per_sequence/{metric}/{module}": ("float64", (count, sequences, layers))
                    for metric in ("cosine_sum", "angular_distance_sum", "last_token_cosine")
                    for module in ("attention", "mlp", "block")
                }
                sums.update({
                    f"similarity/block_gap_sums/{metric}": ("float64", (count, layers, layers))
                    for metric in ("cosine_sum", "angular_distance_sum", "last_token_angular_distance_sum")
                })
                problems += dataset_problems(f, sums)
        # Optional as a whole: files written before angular distances were stored have none.
        angular = {f"scores/{module}_angular_distance{suffix}": ("float32", (count, layers))
                   for module in ("attention", "mlp", "block") for suffix in ("", "_last_token")}
        angular.update({f"similarity/block_gap_angular_distance{suffix}": ("float32", (count, layers, layers))
                        for suffix in ("", "_last_token")})
        if any(name in f for name in angular):
            problems += dataset_problems(f, angular, " (the angular distances are stored together)")
        if problems:
            return problems, None
        problems += check_bootstrap(f, count, layers)
        problems += check_tasks(f, count)
        problems += check_unscored(f, "failed", "error")
        problems += check_unscored(f, "pending", "reason")
        if problems:
            return problems, None

        summary = [
            f"{path}: {f.attrs['model_type']} model, {layers} layers, {count} checkpoints, "
            f"metric {f.attrs['metric']}, droptrace {f.attrs['droptrace_version']}, "
            f"precision {f.attrs.get('precision', 'f32')}",
        ]
        names = names_ds.asstr()[:]
        steps = f["checkpoints/step"][:]
        block = f["scores/block"][:]
        for i in range(count):
            summary.append(f"  {names[i]!r:30} step {steps[i]:>8}  block importance mean {np.nanmean(block[i]):.4g}")
        analysis = f.get("analysis")
        if isinstance(analysis, h5py.Group) and "bootstrap_replicates" in analysis.attrs:
            summary.append(
                f"  bootstrap: {int(analysis.attrs['bootstrap_replicates'])} replicates of "
                f"{int(analysis.attrs['bootstrap_sequences'])} sequences, seed {int(analysis.attrs['bootstrap_seed'])}, "
                f"{float(analysis.attrs['bootstrap_confidence']):.0%} intervals")
        return problems, summary


def check_unscored(f, group, reason):
    """/failed (name, error) or /pending (name, reason), optional, written when the last
    trace failed on some checkpoint or left some for later: string datasets of one length."""
    record = f.get(group)
    if record is None:
        return []
    if not isinstance(record, h5py.Group):
        return [f"/{group} is not a group"]
    lengths = []
    for name in ("name", reason):
        ds = record.get(name)
        if not isinstance(ds, h5py.Dataset) or h5py.check_string_dtype(ds.dtype) is None or ds.ndim != 1:
            return [f"/{group}/{name} missing or not a list of strings"]
        lengths.append(ds.shape[0])
    return [] if lengths[0] == lengths[1] else [f"/{group}/name and /{group}/{reason} differ in length"]


def check_bootstrap(f, count, layers):
    """The optional bootstrap part of /analysis (present with per-sequence sums)."""
    analysis = f.get("analysis")
    if not isinstance(analysis, h5py.Group) or "bootstrap_replicates" not in analysis.attrs:
        return []
    problems = []
    for name in ["bootstrap_replicates", "bootstrap_seed", "bootstrap_sequences"]:
        if not isinstance(analysis.attrs.get(name), np.integer):
            problems.append(f"/analysis attribute {name} missing or not an integer")
    confidence = analysis.attrs.get("bootstrap_confidence")
    if not isinstance(confidence, np.floating) or not 0 < confidence < 1:
        problems.append("/analysis attribute bootstrap_confidence missing or not in (0, 1)")
    ks = [int(k) for k in analysis.attrs.get("drop_k", [])]
    for module in ["attention", "mlp", "block"]:
        expected = {"importance_ci_low": ("float32", (count, layers)),
                    "importance_ci_high": ("float32", (count, layers))}
        expected.update({f"drop_k{k}_probability": ("float32", (count, layers)) for k in ks})
        for statistic in ["mean_importance", "spearman_final", "kendall_final"]:
            for end in ["low", "high"]:
                expected[f"{statistic}_ci_{end}"] = ("float64", (count,))
        problems += dataset_problems(f, {f"analysis/{module}/{name}": spec for name, spec in expected.items()})
        if problems:
            continue
        low = f[f"analysis/{module}/importance_ci_low"][:]
        high = f[f"analysis/{module}/importance_ci_high"][:]
        if np.any(low > high):
            problems.append(f"/analysis/{module}/importance_ci_low exceeds importance_ci_high")
        for k in ks:
            probability = f[f"analysis/{module}/drop_k{k}_probability"][:]
            if np.any(~((probability >= 0) & (probability <= 1))):
                problems.append(f"/analysis/{module}/drop_k{k}_probability holds values outside [0, 1]")
    return problems


def check_tasks(f, count):
    """/evaluation/tasks/<task> (optional, written by `trace --task`): float64 [C]
    acc_full, acc_own_k<k> (and acc_norm_* for tasks with acc_norm), and the
    attributes evaluation_sha256, fewshot_sha256 (strings) and num_fewshot (int)."""
    problems = []
    tasks = f.get("evaluation/tasks")
    if tasks is None:
        return problems
    if not isinstance(tasks, h5py.Group):
        return ["/evaluation/tasks is not a group"]
    for task, group in tasks.items():
        where = f"/evaluation/tasks/{task}"
        if not isinstance(group, h5py.Group):
            problems.append(f"{where} is not a group")
            continue
        for name in ["evaluation_sha256", "fewshot_sha256"]:
            if not isinstance(group.attrs.get(name), str):
                problems.append(f"{where} attribute {name} missing or not a string")
        if not isinstance(group.attrs.get("num_fewshot"), np.integer):
            problems.append(f"{where} attribute num_fewshot missing or not an integer")
        if "acc_full" not in group:
            problems.append(f"{where}/acc_full missing")
        for name, ds in group.items():
            if not (name.startswith("acc_") or name.startswith("acc_norm_")):
                problems.append(f"{where}/{name} is not a task accuracy dataset")
            elif not isinstance(ds, h5py.Dataset) or ds.dtype != np.dtype("float64") or ds.shape != (count,):
                problems.append(f"{where}/{name} is not float64 ({count},)")
    return problems


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    path = sys.argv[1]
    problems, summary = check(path)
    for problem in problems:
        print(f"{path}: {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print("\n".join(summary))


if __name__ == "__main__":
    main()
