#!/usr/bin/env python3
"""LLM-Drop's similarity procedure, one module type per run, as its scripts run it.

    python bench/llmdrop_procedure.py CHECKPOINT --calibration calib.jsonl --target attn|mlp|block --threads N
                                      [--dtype bfloat16|float32] [--attn sdpa|eager]

Follows LLM-Drop (github.com/CASE-Lab-UMD/LLM-Drop, formerly Shwai-He/LLM-Drop;
src/llmtuner/compression/prune/): each of scripts/dropping/layer_drop.sh (target_layer=attn), the
same with target_layer=mlp, and block_drop.sh is a separate `src/compress.py --stage prune`
process (`train_bash.py` in older versions) that loads the causal LM, then, in layer_drop.py
get_layer_similarities / block_drop.py get_block_similarities_consecutive:

  1. prepare_calibration_input: a Catcher replaces layer 0 and records, per calibration sample
     (DataLoader batch_size=1, "batch size must be 1"), layer 0's input and keyword arguments;
  2. for each layer i, runs layer i on every sample in turn, with forward hooks that keep copies
     of the hidden states (HiddenStatesRecordWrapper: .clone().cpu()), the outputs feeding layer i+1;
       attn  (layer_drop_norm True): input of input_layernorm X, output of self_attn A -> cos(X, X + A)
       mlp   (layer_drop_norm True): input of post_attention_layernorm H, output of mlp M -> cos(H, H + M)
       block (consecutive): every layer's input h_0..h_{L-1} and the last output h_L, kept to the end,
             then cos(h_i, h_j) for every pair (block importance is the gap-1 column)
  3. concatenates the recorded states over samples, casts them to float32, takes the mean cosine
     over all tokens (F.cosine_similarity, as LLM-Drop).

Precision, as LLM-Drop runs: its scripts pass `--bf16`; hparams/parser.py turns that into
`model_args.compute_dtype = torch.bfloat16`, and model/loader.py loads the model with
`torch_dtype=model_args.compute_dtype` (then `model.to(compute_dtype)` for inference). So the
whole forward pass, residual stream included, runs in bfloat16 and only the recorded states are
cast to float32 for the cosines. --dtype bfloat16 (the default) does the same; --dtype float32
is the like-for-like variant of droptrace's default precision.

Differences from LLM-Drop, all for a CPU comparison that does not handicap it: attention is
"sdpa" by default (LLM-Drop's loader asks for "eager"; --attn eager reproduces that),
torch.set_num_threads(N), no accelerate (one process, no GPU); the Catcher keeps
every keyword argument layer 0 receives (transformers >= 4.48 passes position_embeddings from the
model, which LLM-Drop's Catcher, written for older versions, did not need). The similarity cache
file and the dropping/saving steps are left out.

Prints one JSON object with the timings and this target's importance scores (1 - similarity).
"""
import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402


def read_calibration(path, seq_len=None, samples=None):
    rows = []
    with open(path) as f:
        for line in f:
            if line.strip():
                ids = json.loads(line)["input_ids"]
                rows.append(ids[:seq_len] if seq_len else ids)
    return rows[:samples] if samples else rows


class HiddenStatesRecordWrapper:  # as LLM-Drop's wrapper.py
    def __init__(self, record_input=True, record_output=True):
        self.record_input, self.record_output = record_input, record_output
        self.input_hidden_states, self.output_hidden_states = [], []

    def record(self, input, output):
        if self.record_input:
            self.input_hidden_states.append(input.squeeze(0).clone().cpu())
        if self.record_output:
            self.output_hidden_states.append(output.squeeze(0).clone().cpu())


def first(x):
    return x[0] if isinstance(x, (tuple, list)) else x


@torch.no_grad()
def prepare_calibration_input(model, batches):
    layers = model.model.layers
    cache = {"inputs": [], "kwargs": []}

    class Catcher(nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, input, **kwargs):
            cache["inputs"].append(input)
            cache["kwargs"].append(kwargs)
            raise ValueError

    layers[0] = Catcher(layers[0])
    for batch in batches:
        try:
            model(**batch)
        except ValueError:
            pass
    layers[0] = layers[0].module
    return cache["inputs"], [None] * len(cache["inputs"]), cache["kwargs"]


@torch.no_grad()
def layer_similarities(model, batches, target):
    model.config.use_cache = False
    layers = model.model.layers
    inputs, outputs, kwargs = prepare_calibration_input(model, batches)
    sims = []
    for i, layer in enumerate(layers):
        if target == "mlp":
            pre_norm, module = layer.post_attention_layernorm, layer.mlp
        else:
            pre_norm, module = layer.input_layernorm, layer.self_attn
        w_norm = HiddenStatesRecordWrapper(record_input=True, record_output=False)  # layer_drop_norm True
        w_mod = HiddenStatesRecordWrapper(record_input=False, record_output=True)
        handles = [
            pre_norm.register_forward_hook(lambda _, inp, out: w_norm.record(inp[0].data, first(out).data)),
            module.register_forward_hook(lambda _, inp, out: w_mod.record(None, first(out).data)),
        ]
        for j in range(len(inputs)):
            outputs[j] = first(layer(inputs[j], **kwargs[j]))
        for h in handles:
            h.remove()
        x = torch.cat(w_norm.input_hidden_states, dim=0).to(torch.float32)
        y = x + torch.cat(w_mod.output_hidden_states, dim=0).to(torch.float32)
        sims.append(F.cosine_similarity(x, y, dim=-1).mean().item())
        inputs, outputs = outputs, inputs
    return sims


@torch.no_grad()
def block_similarities_consecutive(model, batches):
    model.config.use_cache = False
    layers = model.model.layers
    L = len(layers)
    inputs, outputs, kwargs = prepare_calibration_input(model, batches)
    wrapped = []
    for i, layer in enumerate(layers):
        w = HiddenStatesRecordWrapper(record_input=True, record_output=(i == L - 1))
        wrapped.append(w)
        handle = layer.register_forward_hook(lambda _, inp, out, w=w: w.record(inp[0].data, first(out).data))
        for j in range(len(inputs)):
            outputs[j] = first(layer(inputs[j], **kwargs[j]))
        handle.remove()
        inputs, outputs = outputs, inputs
    states = [torch.cat(w.input_hidden_states, dim=0).to(torch.float32) for w in wrapped]
    states.append(torch.cat(wrapped[-1].output_hidden_states, dim=0).to(torch.float32))
    sims = [[None] * L for _ in range(L)]
    for i in range(len(states)):
        for j in range(i + 1, len(states)):
            sims[i][j - i - 1] = F.cosine_similarity(states[i], states[j], dim=-1).mean().item()
    return sims


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--calibration", required=True)
    ap.add_argument("--target", choices=["attn", "mlp", "block"], required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16",
                    help="the model's dtype (default bfloat16, as LLM-Drop's scripts run it)")
    ap.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa",
                    help="attention implementation (default sdpa; LLM-Drop's loader asks for eager)")
    ap.add_argument("--seq-len", type=int)
    ap.add_argument("--samples", type=int)
    ap.add_argument("--output", help="write the JSON here instead of stdout")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    t_imported = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.checkpoint, dtype=getattr(torch, args.dtype),
                                                 attn_implementation=args.attn)
    model.eval()
    rows = read_calibration(args.calibration, args.seq_len, args.samples)
    batches = [{"input_ids": torch.tensor([r]), "attention_mask": torch.ones(1, len(r), dtype=torch.long)} for r in rows]
    t_loaded = time.perf_counter()

    result = {"tool": "llmdrop_procedure", "target": args.target, "checkpoint": args.checkpoint,
              "threads": args.threads, "dtype": args.dtype, "attn_implementation": args.attn, "tokens": sum(len(r) for r in rows), "torch": torch.__version__}
    if args.target == "block":
        sims = block_similarities_consecutive(model, batches)
        result["block"] = [1 - row[0] for row in sims]
        result["block_gap"] = sims
    else:
        key = "attention" if args.target == "attn" else "mlp"
        result[key] = [1 - s for s in layer_similarities(model, batches, args.target)]
    t_done = time.perf_counter()
    result["seconds"] = {
        "import": t_imported - T_START,
        "load": t_loaded - t_imported,
        "compute": t_done - t_loaded,
        "total_excluding_load": t_done - t_loaded,
        "total_including_load": t_done - T_START,
    }
    text = json.dumps(result)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
