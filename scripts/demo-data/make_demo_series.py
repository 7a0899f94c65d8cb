#!/usr/bin/env python3
"""Make droptrace's shipped demo data: data/demo-series/ and data/calibration.txt.

Trains a small Llama-architecture model (transformers' LlamaForCausalLM) with
transformers' Trainer on five of Jane Austen's novels and keeps eight
checkpoints, log-spaced over training, as the Trainer writes them (weights
converted to bfloat16 to keep the repository small; see README.md).

Stages, run in this order by default (``all``):

  text       get the Debian package r-cran-janeaustenr (``apt-get download``,
             or ``--deb FILE``), read the novels out of its R data files, and
             write the training/eval corpus (scratch dir) and
             data/calibration.txt (Emma, chapter I)
  tokenizer  train a GPT-2-style byte-level BPE tokenizer on the training text
  train      train with transformers.Trainer, saving checkpoints at STEPS into
             data/demo-series/checkpoint-<step>/
  verify     reload every checkpoint with LlamaForCausalLM.from_pretrained,
             check the files, and print the per-layer attention and MLP importance
             (LLM-Drop: 1 - mean cos(input, output) on the residual stream) on the
             calibration windows droptrace's demo uses

Scratch files (the .deb, extracted corpus, tokenizer) go to --work (default:
droptrace-demo-data in the system's temp directory); nothing there is shipped.
Everything is seeded; see README.md for how reproducible the output is.
"""

import argparse
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data"
SERIES = DATA / "demo-series"
CALIBRATION = DATA / "calibration.txt"

# ---- the text source: Debian bookworm's r-cran-janeaustenr (MIT-licensed
# package of Jane Austen's public-domain novels).
DEB_PACKAGE = "r-cran-janeaustenr"
DEB_VERSION = "1.0.0-1"
DEB_SHA256 = "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95"
DEB_DATA_DIR = "usr/lib/R/site-library/janeaustenr/data/"
TRAIN_NOVELS = ["sensesensibility", "prideprejudice", "mansfieldpark", "northangerabbey", "persuasion"]
HELD_OUT_NOVEL = "emma"  # never trained on: calibration = chapter I, eval = chapters II-IV

# ---- tokenizer
VOCAB = 640
EOT = "<|endoftext|>"

# ---- model
MODEL = dict(
    vocab_size=VOCAB,
    hidden_size=40,
    intermediate_size=108,
    num_hidden_layers=8,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    rms_norm_eps=1e-5,
    hidden_act="silu",
    initializer_range=0.02,
    tie_word_embeddings=True,
    bos_token_id=0,
    eos_token_id=0,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
)

# ---- training
SEQ_LEN = 128
BATCH = 16
STEPS = [10, 25, 50, 100, 200, 400, 700, 1000]
MAX_STEPS = STEPS[-1]
LR = 3e-3
WARMUP = 50
SEED = 1234
THREADS = 2

# ---- droptrace's demo calibration
CALIB_WINDOWS = 16


def log(msg):
    print(msg, flush=True)


def sha256(b):
    return hashlib.sha256(b).hexdigest()


# =========================================================================== text

def read_deb_member(deb_bytes, member):
    """Return the bytes of one file inside a .deb (ar archive with data.tar.*)."""
    assert deb_bytes[:8] == b"!<arch>\n", "not a .deb (ar) file"
    p = 8
    while p < len(deb_bytes):
        hdr = deb_bytes[p:p + 60]
        name = hdr[:16].decode().strip().rstrip("/")
        size = int(hdr[48:58].decode().strip())
        body = deb_bytes[p + 60:p + 60 + size]
        p += 60 + size + (size & 1)
        if name.startswith("data.tar"):
            if name.endswith(".xz"):
                body = lzma.decompress(body)
            elif name.endswith(".gz"):
                body = gzip.decompress(body)
            elif not name.endswith(".tar"):
                raise SystemExit(f"unsupported {name} in the .deb")
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                for m in tar.getmembers():
                    if m.name.lstrip("./") == member:
                        return tar.extractfile(m).read()
            raise SystemExit(f"{member} not in the .deb")
    raise SystemExit("no data.tar in the .deb")


class RUnserialize:
    """Just enough of R's XDR serialization format (version 2/3) to read the
    package's lazy-load database: pairlists, symbols, character, integer,
    logical, double and generic vectors, with attributes."""

    NIL, REF, ENVS = 254, 255, (241, 242, 247, 253)

    def __init__(self, data):
        if data[:2] != b"X\n":
            raise ValueError("not XDR-serialized R data")
        self.b, self.p, self.refs = data, 2, []
        version = self.int()
        self.int()
        self.int()
        if version == 3:
            n = self.int()  # then the native encoding's name
            self.p += n

    def int(self):
        (v,) = struct.unpack_from(">i", self.b, self.p)
        self.p += 4
        return v

    def length(self):
        n = self.int()
        if n == -1:
            hi, lo = self.int(), self.int()
            n = (hi << 32) + lo
        return n

    def item(self):
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind == self.NIL:
            return None
        if kind in self.ENVS:
            return ("env", kind)
        if kind == self.REF:
            return self.refs[(flags >> 8) - 1]
        if kind == 1:  # SYMSXP
            sym = ("sym", self.item())
            self.refs.append(sym)
            return sym
        if kind in (2, 6):  # LISTSXP / LANGSXP: a pairlist -> {tag: value}
            out = {}
            while True:
                if has_attr:
                    self.item()
                tag = self.item() if has_tag else None
                out[tag[1] if tag else len(out)] = self.item()
                flags = self.int()
                kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
                if kind == self.NIL:
                    return out
                if kind != 2:
                    raise ValueError(f"unexpected pairlist cell type {kind}")
        if kind == 9:  # CHARSXP
            n = self.int()
            if n == -1:
                return None
            s = self.b[self.p:self.p + n].decode("utf-8")
            self.p += n
            return s
        n = self.length()
        if kind in (16, 19):  # STRSXP, VECSXP
            value = [self.item() for _ in range(n)]
        elif kind in (10, 13):  # LGLSXP, INTSXP
            value = list(struct.unpack_from(f">{n}i", self.b, self.p))
            self.p += 4 * n
        elif kind == 14:  # REALSXP
            value = list(struct.unpack_from(f">{n}d", self.b, self.p))
            self.p += 8 * n
        else:
            raise ValueError(f"unsupported R type {kind}")
        if has_attr:
            return {"value": value, "attributes": self.item()}
        return value


def read_lazyload_db(rdx_bytes, rdb_bytes):
    """R lazy-load database (data/Rdata.rdx + .rdb) -> {name: object}."""
    index = RUnserialize(gzip.decompress(rdx_bytes)).item()
    top = dict(zip(index["attributes"]["names"], index["value"]))
    variables = top["variables"]
    out = {}
    for name, (offset, length) in zip(variables["attributes"]["names"], variables["value"]):
        blob = rdb_bytes[offset:offset + length]
        (size,) = struct.unpack(">I", blob[:4])
        raw = zlib.decompress(blob[4:])
        assert len(raw) == size, name
        out[name] = RUnserialize(raw).item()
    return out


def paragraphs(lines):
    """Project Gutenberg hard-wrapped lines -> list of paragraphs (one line each)."""
    paras, cur = [], []
    for line in lines + [""]:
        line = line.strip()
        if line:
            cur.append(line)
        elif cur:
            text = " ".join(cur)
            text = re.sub(r"_([^_]+)_", r"\1", text)  # _italics_ markers
            text = re.sub(r" {2,}", " ", text)
            paras.append(text)
            cur = []
    return paras


def chapter_slices(paras):
    starts = [i for i, p in enumerate(paras) if re.fullmatch(r"CHAPTER [IVXLC]+", p)]
    return [paras[s:e] for s, e in zip(starts, starts[1:] + [len(paras)])]


def get_deb(args, work):
    if args.deb:
        path = Path(args.deb)
    else:
        path = work / f"{DEB_PACKAGE}_{DEB_VERSION}_all.deb"
        if not path.exists():
            log(f"text: apt-get download {DEB_PACKAGE}={DEB_VERSION}")
            subprocess.run(["apt-get", "download", f"{DEB_PACKAGE}={DEB_VERSION}"], cwd=work, check=True)
    data = path.read_bytes()
    if sha256(data) != DEB_SHA256:
        raise SystemExit(f"{path}: sha256 {sha256(data)} is not the expected {DEB_SHA256}")
    return data


def stage_text(args, work):
    deb = get_deb(args, work)
    rdx = read_deb_member(deb, DEB_DATA_DIR + "Rdata.rdx")
    rdb = read_deb_member(deb, DEB_DATA_DIR + "Rdata.rdb")
    novels = read_lazyload_db(rdx, rdb)
    assert set(TRAIN_NOVELS + [HELD_OUT_NOVEL]) <= set(novels), sorted(novels)

    train = []
    for name in TRAIN_NOVELS:
        lines = novels[name]
        assert all(isinstance(x, str) for x in lines), name
        train.append("\n\n".join(paragraphs(lines)) + "\n")
    (work / "train.json").write_text(json.dumps(train))
    size = sum(len(t.encode()) for t in train)
    log(f"text: training corpus {size} bytes from {len(train)} novels, sha256 "
        f"{sha256(json.dumps(train).encode())[:16]}")

    chapters = chapter_slices(paragraphs(novels[HELD_OUT_NOVEL]))
    calib = "\n\n".join(chapters[0]) + "\n"
    evaltext = "\n\n".join(p for ch in chapters[1:4] for p in ch) + "\n"
    for t in train:  # held out for real: no calibration paragraph is in the training text
        assert not any(len(p) > 80 and p in t for p in chapters[0])
    CALIBRATION.parent.mkdir(parents=True, exist_ok=True)
    CALIBRATION.write_text(calib)
    (work / "eval.txt").write_text(evaltext)
    log(f"text: {CALIBRATION.relative_to(REPO)} {len(calib.encode())} bytes (Emma, chapter I); "
        f"eval text {len(evaltext.encode())} bytes (Emma, chapters II-IV)")


# ====================================================================== tokenizer

def stage_tokenizer(args, work):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    train = json.loads((work / "train.json").read_text())
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, min_frequency=2, show_progress=False, special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    # Paragraphs (with their blank-line separators) as the training units.
    tok.train_from_iterator((p + "\n\n" for novel in train for p in novel.split("\n\n")), trainer=trainer)
    assert tok.get_vocab_size() == VOCAB and tok.token_to_id(EOT) == 0
    tok.save(str(work / "tokenizer.json"))
    again = Tokenizer.from_file(str(work / "tokenizer.json"))
    calib = CALIBRATION.read_text()
    ids = tok.encode(calib).ids
    assert again.encode(calib).ids == ids and again.decode(ids) == calib
    log(f"tokenizer: vocab {VOCAB}; calibration text -> {len(ids)} tokens "
        f"({len(calib.encode()) / len(ids):.2f} bytes/token)")


# ========================================================================== train

def block_dataset(ids_list, seq_len):
    import torch

    class Blocks(torch.utils.data.Dataset):
        def __init__(self, ids):
            n = len(ids) // seq_len
            self.x = torch.tensor(ids[:n * seq_len], dtype=torch.long).view(n, seq_len)

        def __len__(self):
            return self.x.shape[0]

        def __getitem__(self, i):
            return {"input_ids": self.x[i], "labels": self.x[i]}

    flat = []
    for ids in ids_list:
        flat.extend(ids)
    return Blocks(flat)


def to_bf16_in_place(ckpt):
    """Rewrite the Trainer's model.safetensors with bfloat16 tensors (same file
    name, same tensor names, same metadata) and record the dtype in config.json."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = ckpt / "model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    save_file(tensors, str(path), metadata=meta)
    os.chmod(path, 0o644)  # safetensors creates it 0600
    cfg_path = ckpt / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["dtype"] = "bfloat16"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def stage_train(args, work):
    import torch
    import transformers as tf

    torch.set_num_threads(THREADS)
    tf.set_seed(SEED)

    from tokenizers import Tokenizer

    raw_tok = Tokenizer.from_file(str(work / "tokenizer.json"))
    tokenizer = tf.PreTrainedTokenizerFast(
        tokenizer_object=raw_tok, bos_token=EOT, eos_token=EOT, model_max_length=SEQ_LEN)

    train = json.loads((work / "train.json").read_text())
    # Novels in a fixed order, each followed by <|endoftext|>, cut into blocks.
    train_ds = block_dataset([raw_tok.encode(t).ids + [0] for t in train], SEQ_LEN)
    eval_ds = block_dataset([raw_tok.encode((work / "eval.txt").read_text()).ids], SEQ_LEN)
    log(f"train: {len(train_ds)} training blocks ({len(train_ds) * SEQ_LEN} tokens), "
        f"{len(eval_ds)} eval blocks; {MAX_STEPS} steps x {BATCH} x {SEQ_LEN} = "
        f"{MAX_STEPS * BATCH * SEQ_LEN} tokens (~{MAX_STEPS * BATCH / len(train_ds):.2f} epochs)")

    model = tf.LlamaForCausalLM(tf.LlamaConfig(**MODEL))
    model.to(torch.float32)
    log(f"train: {sum(p.numel() for p in model.parameters())} parameters")

    if SERIES.exists():
        shutil.rmtree(SERIES)

    steps = set(STEPS)

    class SaveAt(tf.TrainerCallback):
        """Save (and evaluate) exactly at STEPS; shrink each checkpoint after the Trainer wrote it."""

        def on_step_end(self, a, state, control, **kw):
            if state.global_step in steps:
                control.should_save = True
                control.should_evaluate = True
            return control

        def on_save(self, a, state, control, **kw):
            ckpt = Path(a.output_dir) / f"checkpoint-{state.global_step}"
            for name in ("training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth"):
                if (ckpt / name).exists():
                    (ckpt / name).unlink()
            to_bf16_in_place(ckpt)
            log(f"train: saved {ckpt.relative_to(REPO)}")

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and ("loss" in logs or "eval_loss" in logs):
                log(f"  step {state.global_step:5d} " + " ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in logs.items()))

    targs = tf.TrainingArguments(
        output_dir=str(SERIES),
        max_steps=MAX_STEPS,
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=BATCH,
        learning_rate=LR,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": 0.1},
        warmup_steps=WARMUP,
        weight_decay=0.01,
        adam_beta1=0.9,
        adam_beta2=0.95,
        max_grad_norm=1.0,
        logging_strategy="steps",
        logging_steps=10,
        logging_first_step=True,
        eval_strategy="steps",
        eval_steps=MAX_STEPS,
        save_strategy="steps",
        save_steps=MAX_STEPS,
        save_total_limit=None,
        save_only_model=True,
        include_num_input_tokens_seen=True,
        seed=SEED,
        data_seed=SEED,
        full_determinism=True,
        use_cpu=True,
        dataloader_num_workers=0,
        dataloader_drop_last=True,  # every step sees BATCH x SEQ_LEN tokens
        dataloader_pin_memory=False,
        report_to="none",
        disable_tqdm=True,
    )
    trainer = tf.Trainer(
        model=model, args=targs, train_dataset=train_ds, eval_dataset=eval_ds,
        processing_class=tokenizer, data_collator=tf.default_data_collator, callbacks=[SaveAt()],
    )
    trainer.remove_callback(tf.trainer_callback.PrinterCallback)  # SaveAt.on_log prints instead
    t0 = time.time()
    trainer.train()
    log(f"train: {time.time() - t0:.0f} s")
    saved = sorted(int(p.name.split("-")[1]) for p in SERIES.glob("checkpoint-*"))
    assert saved == STEPS, saved
    leftovers = [p.name for p in SERIES.iterdir() if not p.name.startswith("checkpoint-")]
    for name in leftovers:  # e.g. runs/ logs; nothing but the checkpoints ships
        p = SERIES / name
        shutil.rmtree(p) if p.is_dir() else p.unlink()


# ========================================================================= verify

def calibration_windows(tokenizer_json):
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(tokenizer_json)).encode(CALIBRATION.read_text()).ids
    wins = [ids[k * SEQ_LEN:(k + 1) * SEQ_LEN] for k in range(len(ids) // SEQ_LEN)]
    assert len(wins) >= CALIB_WINDOWS, f"only {len(wins)} windows"
    return len(ids), wins[:CALIB_WINDOWS]


def importances(model, windows):
    """Per layer: attention 1 - mean cos(X, H) and MLP 1 - mean cos(H, Y), over
    all tokens; X = decoder layer input, H = input of post_attention_layernorm
    (= X + attn_out), Y = decoder layer output. Each window runs alone."""
    import numpy as np
    import torch

    layers = model.model.layers
    X = [[] for _ in layers]
    H = [[] for _ in layers]
    A = [[] for _ in layers]
    Y = [[] for _ in layers]
    hooks = []
    for i, layer in enumerate(layers):
        def pre_layer(mod, a, kw, i=i):
            X[i].append((a[0] if a else kw["hidden_states"]).detach()[0].double().numpy())

        def pre_norm2(mod, a, kw, i=i):
            H[i].append((a[0] if a else kw["hidden_states"]).detach()[0].double().numpy())

        def post_layer(mod, a, kw, out, i=i):
            Y[i].append((out[0] if isinstance(out, tuple) else out).detach()[0].double().numpy())

        def post_attn(mod, a, kw, out, i=i):
            A[i].append((out[0] if isinstance(out, tuple) else out).detach()[0].double().numpy())

        hooks.append(layer.register_forward_pre_hook(pre_layer, with_kwargs=True))
        hooks.append(layer.register_forward_hook(post_layer, with_kwargs=True))
        hooks.append(layer.post_attention_layernorm.register_forward_pre_hook(pre_norm2, with_kwargs=True))
        hooks.append(layer.self_attn.register_forward_hook(post_attn, with_kwargs=True))
    losses = []
    with torch.no_grad():
        for w in windows:
            x = torch.tensor([w])
            losses.append(model(input_ids=x, labels=x).loss.item())
    for h in hooks:
        h.remove()
    def mean_cos(u, v):
        return float(((u * v).sum(1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1))).mean())

    att, mlp = [], []
    for i in range(len(layers)):
        x, h, a, y = (np.concatenate(r[i]) for r in (X, H, A, Y))
        assert np.allclose(x + a, h, rtol=1e-5, atol=1e-5), f"H != X + attn_out in layer {i}"
        if i + 1 < len(layers):
            assert np.array_equal(y, np.concatenate(X[i + 1])), f"layer {i} output != layer {i + 1} input"
        att.append(1 - mean_cos(x, h))
        mlp.append(1 - mean_cos(h, y))
    return att, mlp, float(np.mean(losses))


def stage_verify(args, work):
    import torch
    import transformers as tf

    torch.set_num_threads(THREADS)
    dirs = sorted(SERIES.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert [int(p.name.split("-")[1]) for p in dirs] == STEPS, [p.name for p in dirs]
    ref_tok = None
    rows = []
    for d in dirs:
        names = sorted(p.name for p in d.iterdir())
        for need in ("config.json", "model.safetensors", "trainer_state.json", "tokenizer.json", "tokenizer_config.json"):
            assert need in names, (d.name, need)
        for banned in ("training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth", "scaler.pt"):
            assert banned not in names, (d.name, banned)
        tok = (d / "tokenizer.json").read_bytes()
        assert ref_tok is None or tok == ref_tok, f"{d.name}: tokenizer.json differs"
        ref_tok = tok
        state = json.loads((d / "trainer_state.json").read_text())
        step = int(d.name.split("-")[1])
        assert state["global_step"] == step and state["num_input_tokens_seen"] == step * BATCH * SEQ_LEN
        hist = state["log_history"]
        train_loss = [h["loss"] for h in hist if "loss" in h]
        eval_loss = [h["eval_loss"] for h in hist if "eval_loss" in h and h["step"] == step]
        model = tf.LlamaForCausalLM.from_pretrained(str(d), dtype=torch.float32, attn_implementation="eager")
        model.eval()
        assert next(iter(model.state_dict().values())).dtype == torch.float32
        ntok, wins = calibration_windows(d / "tokenizer.json")
        att, mlp, calib_loss = importances(model, wins)
        rows.append((d.name, step, state["num_input_tokens_seen"], train_loss[-1], eval_loss[0], calib_loss, att, mlp))
    log(f"verify: calibration.txt -> {ntok} tokens; {CALIB_WINDOWS} windows of {SEQ_LEN} "
        f"(consecutive from the start, no special tokens)")
    log(f"verify: first logged training loss {train_loss[0]:.4f}")
    log("checkpoint        step  tokens_seen  train_loss  eval_loss  calib_loss")
    for name, step, seen, tl, el, cl, _, _ in rows:
        log(f"{name:16s} {step:5d} {seen:12d} {tl:11.4f} {el:10.4f} {cl:11.4f}")
    log("attention importance per layer (1 - mean cos(X, X + attn_out)), float32 compute:")
    for name, *_, att, _ in rows:
        log(f"{name:16s} " + " ".join(f"{v:.6f}" for v in att))
    log("MLP importance per layer (1 - mean cos(H, H + mlp_out)), float32 compute:")
    for name, *_, mlp in rows:
        log(f"{name:16s} " + " ".join(f"{v:.6f}" for v in mlp))
    size = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    log(f"verify: data/ holds {size} bytes in files")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stages", nargs="*", metavar="STAGE",
                    help="all (default), text, tokenizer, train, verify")
    ap.add_argument("--deb", help=f"a downloaded {DEB_PACKAGE}_{DEB_VERSION}_all.deb (default: apt-get download)")
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "droptrace-demo-data"),
                    help="scratch directory (default: %(default)s)")
    args = ap.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    order = ["text", "tokenizer", "train", "verify"]
    unknown = sorted(set(args.stages) - set(order) - {"all"})
    if unknown:
        ap.error(f"unknown stage(s) {unknown}; choose from all, {', '.join(order)}")
    stages = order if not args.stages or "all" in args.stages else args.stages
    for s in order:
        if s in stages:
            globals()[f"stage_{s}"](args, work)


if __name__ == "__main__":
    sys.exit(main())
