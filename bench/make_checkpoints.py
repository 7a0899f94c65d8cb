#!/usr/bin/env python3
"""Creates the benchmark's random-weight checkpoints and calibration set (never committed).

    python bench/make_checkpoints.py [--out bench/work] [--models mid tiny]

Writes, under --out (default bench/work, git-ignored):
  mid/   Llama architecture, hidden 1024, 12 layers, 16 heads, 4 KV heads, intermediate 2816,
         vocab 32000, 2048 positions, bfloat16 safetensors
  tiny/  TinyLlama-1.1B shape: hidden 2048, 22 layers, 32 heads, 4 KV heads, intermediate 5632,
         vocab 32000, 2048 positions, bfloat16 safetensors
  calib.jsonl  16 sequences x 512 random token ids (< 32000), one {"input_ids": [...]} per line

Weights use transformers' default initialisation (normal, std = initializer_range 0.02) from a
fixed seed, so activations stay finite; the same seed gives the same files.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

MODELS = {
    "mid": dict(hidden_size=1024, num_hidden_layers=12, num_attention_heads=16,
                num_key_value_heads=4, intermediate_size=2816),
    "tiny": dict(hidden_size=2048, num_hidden_layers=22, num_attention_heads=32,
                 num_key_value_heads=4, intermediate_size=5632),
}
COMMON = dict(vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-5,
              rope_theta=10000.0, hidden_act="silu", tie_word_embeddings=False,
              initializer_range=0.02, bos_token_id=1, eos_token_id=2)
SEED = {"mid": 1234, "tiny": 5678}
CALIB_SEED, CALIB_SEQS, CALIB_LEN = 42, 16, 512


def make_model(name, out_dir):
    target = os.path.join(out_dir, name)
    if os.path.exists(os.path.join(target, "model.safetensors")) or \
       os.path.exists(os.path.join(target, "model.safetensors.index.json")):
        print(f"{target}: exists, kept", file=sys.stderr)
        return
    t0 = time.time()
    torch.manual_seed(SEED[name])
    config = LlamaConfig(**MODELS[name], **COMMON)
    model = LlamaForCausalLM(config)  # float32, transformers' default init
    model = model.to(torch.bfloat16)
    model.config.dtype = "bfloat16"
    tmp = target + ".tmp"
    model.save_pretrained(tmp, safe_serialization=True, max_shard_size="20GB")
    os.replace(tmp, target)
    n = sum(p.numel() for p in model.parameters())
    print(f"{target}: {n/1e6:.1f}M parameters, {time.time()-t0:.0f}s", file=sys.stderr)


def make_calibration(out_dir):
    path = os.path.join(out_dir, "calib.jsonl")
    if os.path.exists(path):
        print(f"{path}: exists, kept", file=sys.stderr)
        return
    rng = np.random.default_rng(CALIB_SEED)
    ids = rng.integers(0, COMMON["vocab_size"], size=(CALIB_SEQS, CALIB_LEN))
    with open(path + ".tmp", "w") as f:
        for row in ids:
            f.write(json.dumps({"input_ids": [int(x) for x in row]}) + "\n")
    os.replace(path + ".tmp", path)
    print(f"{path}: {CALIB_SEQS} x {CALIB_LEN} tokens", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "work"))
    ap.add_argument("--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS),
                    help="which checkpoints to create (default: all)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    make_calibration(args.out)
    for name in MODELS:
        if name in args.models:
            make_model(name, args.out)


if __name__ == "__main__":
    main()
