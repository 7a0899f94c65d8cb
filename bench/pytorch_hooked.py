#!/usr/bin/env python3
"""LLM-Drop module importance from ONE batched PyTorch forward pass with hooks.

    python bench/pytorch_hooked.py CHECKPOINT --calibration calib.jsonl --threads N [--dtype float32|bfloat16]
                                   [--output scores.json]

PyTorch + transformers at their best on the CPU: the model in --dtype (float32, the default, or
bfloat16 as LLM-Drop loads it: weights and the whole forward pass in bfloat16, the residual
stream included; oneDNN runs its matrix products on AMX / AVX512-BF16 where the CPU has them),
torch.inference_mode(),
attn_implementation="sdpa", the base model (AutoModel, no LM head), use_cache=False,
torch.set_num_threads(N), every calibration sequence in one batch (they all have the same
length, so no padding). Forward hooks on each decoder layer (input X, output Y), its self_attn
(output A) and its post_attention_layernorm (input H = X + A) give, over all tokens,

    attention importance = 1 - mean cos(X, X + A)
    MLP importance       = 1 - mean cos(H, Y)          (Y = H + MLP(Norm2 H))
    block importance     = 1 - mean cos(X, Y)
    block_gap[i][n-1]    = mean cos(h_i, h_{i+n})       (h_0..h_L block-boundary states; null where i+n > L)

Prints one JSON object: the timings (import, load, compute; load excluded and included) and the
scores. Cosines are computed in float32 per token (bfloat16 states are cast to float32 first, and
X + A is added in float32, as LLM-Drop does) and averaged in float64.
"""
import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import AutoModel  # noqa: E402


def read_calibration(path, seq_len=None, samples=None):
    rows = []
    with open(path) as f:
        for line in f:
            if line.strip():
                ids = json.loads(line)["input_ids"]
                rows.append(ids[:seq_len] if seq_len else ids)
    if samples:
        rows = rows[:samples]
    if len({len(r) for r in rows}) != 1:
        sys.exit("calibration sequences must all have the same length (no padding here)")
    return torch.tensor(rows, dtype=torch.long)


def mean_cos(a, b):
    d = a.shape[-1]
    return F.cosine_similarity(a.reshape(-1, d).float(), b.reshape(-1, d).float(), dim=-1).double().mean().item()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--calibration", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="the model's dtype (default float32)")
    ap.add_argument("--seq-len", type=int)
    ap.add_argument("--samples", type=int)
    ap.add_argument("--output", help="write the JSON here instead of stdout")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    t_imported = time.perf_counter()

    model = AutoModel.from_pretrained(args.checkpoint, dtype=getattr(torch, args.dtype), attn_implementation="sdpa")
    model.eval()
    input_ids = read_calibration(args.calibration, args.seq_len, args.samples)
    t_loaded = time.perf_counter()

    layers = model.layers
    L = len(layers)
    attn_sim, mlp_sim, block_sim = [None] * L, [None] * L, [None] * L
    gap = [[None] * L for _ in range(L + 1)]
    boundary = []  # unit-normalised h_0..h_L, [B*S, d] each
    state = {}

    def add_boundary(h):
        u = F.normalize(h.reshape(-1, h.shape[-1]).float(), dim=-1, eps=1e-8)
        j = len(boundary)
        for i, prev in enumerate(boundary):
            gap[i][j - i - 1] = (prev * u).sum(-1).double().mean().item()
        boundary.append(u)

    def layer_pre(i):
        def hook(module, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            state["x"] = x
            if i == 0:
                add_boundary(x)
        return hook

    def attn_post(i):
        def hook(module, args, output):
            a = output[0] if isinstance(output, tuple) else output
            attn_sim[i] = mean_cos(state["x"], state["x"].float() + a.float())
        return hook

    def norm2_pre(i):
        def hook(module, args):
            state["h"] = args[0]
        return hook

    def layer_post(i):
        def hook(module, args, kwargs, output):
            y = output[0] if isinstance(output, tuple) else output
            mlp_sim[i] = mean_cos(state["h"], y)
            block_sim[i] = mean_cos(state["x"], y)
            add_boundary(y)
        return hook

    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(layer_pre(i), with_kwargs=True))
        handles.append(layer.self_attn.register_forward_hook(attn_post(i)))
        handles.append(layer.post_attention_layernorm.register_forward_pre_hook(norm2_pre(i)))
        handles.append(layer.register_forward_hook(layer_post(i), with_kwargs=True))

    with torch.inference_mode():
        model(input_ids=input_ids, use_cache=False)
    for h in handles:
        h.remove()
    t_done = time.perf_counter()

    result = {
        "tool": "pytorch_hooked",
        "checkpoint": args.checkpoint,
        "threads": args.threads,
        "dtype": args.dtype,
        "tokens": int(input_ids.numel()),
        "sequences": int(input_ids.shape[0]),
        "seq_len": int(input_ids.shape[1]),
        "torch": torch.__version__,
        "seconds": {
            "import": t_imported - T_START,
            "load": t_loaded - t_imported,
            "compute": t_done - t_loaded,
            "total_excluding_load": t_done - t_loaded,
            "total_including_load": t_done - T_START,
        },
        "attention": [1 - s for s in attn_sim],
        "mlp": [1 - s for s in mlp_sim],
        "block": [1 - s for s in block_sim],
        "block_gap": gap[:L],
    }
    text = json.dumps(result)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
