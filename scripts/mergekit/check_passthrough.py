#!/usr/bin/env python3
"""Check what a mergekit passthrough builds from a fixture with some layers dropped, as
`droptrace drop --export-mergekit` would write it: run `mergekit-yaml` on the slices of the kept
layers, load the merged model in transformers and compare its logits with the fixture's model with
those layers removed in memory (each keeping its own settings). Prints, per case, mergekit's or
transformers' refusal, or the merged model's missing / unexpected tensors and the largest logit
difference. This is how the refusals of `MergekitSlices` were checked (tests in
MergekitPassthroughTests).

Run in the fixture venv with mergekit installed (`pip install mergekit`):
    python3 scripts/mergekit/check_passthrough.py llama-f32:2 glm4_moe-f32:0 internlm3-f32:1,3
"""
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import transformers

FIXTURES = Path(__file__).resolve().parents[2] / "Tests/DroptraceTests/Fixtures/models"
LAYER_LISTS = ["model.layers", "transformer.h", "gpt_neox.layers", "backbone.layers"]


def slices(model, layers, dropped):
    kept = [i for i in range(layers) if i not in dropped]
    runs = []
    for i in kept:
        if runs and runs[-1][1] == i:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    text = "slices:\n" + "".join(
        f'  - sources:\n      - model: "{model}"\n        layer_range: [{a}, {b}]\n' for a, b in runs)
    return text + "merge_method: passthrough\ndtype: float32\n"


def layer_list(model):
    for path in LAYER_LISTS:
        owner = model
        try:
            for part in path.split(".")[:-1]:
                owner = getattr(owner, part)
            getattr(owner, path.split(".")[-1])
            return owner, path.split(".")[-1]
        except AttributeError:
            continue
    raise SystemExit(f"no layer list among {LAYER_LISTS}")


def check(name, dropped, work):
    source = FIXTURES / name
    config = json.loads((source / "config.json").read_text())
    layers = next(config[key] for key in ("num_hidden_layers", "n_layer", "num_layers") if key in config)
    out = work / "merged"
    shutil.rmtree(out, ignore_errors=True)
    (work / "slices.yaml").write_text(slices(source, layers, dropped))
    merge = subprocess.run(["mergekit-yaml", str(work / "slices.yaml"), str(out)], capture_output=True, text=True)
    if merge.returncode:
        return "mergekit refused: " + merge.stderr.strip().splitlines()[-1]
    try:
        merged, info = transformers.AutoModelForCausalLM.from_pretrained(out, output_loading_info=True, dtype=torch.float32)
    except Exception as error:  # transformers' refusal is the finding
        return "transformers refused: " + str(error).splitlines()[0]
    reference = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    owner, attribute = layer_list(reference)
    setattr(owner, attribute, torch.nn.ModuleList(
        [layer for i, layer in enumerate(getattr(owner, attribute)) if i not in dropped]))
    ids = torch.tensor([[1, 5, 9, 13, 17, 21, 25, 29, 33, 37, 41, 45]])
    with torch.no_grad():
        difference = (merged(ids, use_cache=False).logits - reference(ids, use_cache=False).logits).abs().max()
    return (f"missing {len(info['missing_keys'])}, unexpected {len(info['unexpected_keys'])}, "
            f"max |logit difference| {float(difference):.3g}")


def main():
    work = Path(tempfile.mkdtemp())
    try:
        for case in sys.argv[1:]:
            name, layers = case.split(":")
            dropped = {int(layer) for layer in layers.split(",")}
            print(f"{name} dropping {sorted(dropped)}: {check(name, dropped, work)}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
