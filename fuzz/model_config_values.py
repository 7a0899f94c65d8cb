#!/usr/bin/env python3
"""Mutation fuzzer for model sizes: every numeric config.json value of the fixture models and every
numeric GGUF metadata value of the fixture GGUFs is replaced, one at a time, by values of the kinds
that used to crash (0, negative, huge, overflowing, fractions, NaN/inf, wrong types), and
`droptrace score` is run on the result. Every run must end in exit 0 (a valid value), or exit 1/64
with exactly one error line, within 20 s and under a 4 GiB address-space cap.

Values are replaced at the top level and nested up to three levels (`text_config.rope_parameters.factor`).
Run on demand (not in CI; about 700 runs per fixture, ~5 min each on two cores):
    python3 fuzz/model_config_values.py .build/debug/droptrace "$(mktemp -d)" [--gguf-only]
    FUZZ_MODELS="zaya-f32 step3p7-f32" python3 fuzz/model_config_values.py ...   # only these fixtures
    FUZZ_GGUFS="phi3-f32.gguf" python3 fuzz/model_config_values.py ... --gguf-only  # only these GGUF files (Fixtures/gguf, gguf-arch)
    FUZZ_COMMAND=drop python3 fuzz/model_config_values.py ...   # runs `drop` (perplexity, speed, export) instead of `score`
Prints each run that breaks the rule and a summary line; exits 1 if any did."""
import json, os, shutil, struct, subprocess, sys, resource

droptrace, work = os.path.abspath(sys.argv[1]), sys.argv[2]
# FUZZ_COMMAND=drop: `drop` (one attention layer, perplexity, one timing round, an export) instead of `score`.
dropping = os.environ.get('FUZZ_COMMAND') == 'drop'
fixtures = os.path.join(os.path.dirname(os.path.abspath(__file__)), '../Tests/DroptraceTests/Fixtures')
calibration = os.path.join(fixtures, 'calibration/calib.jsonl')
runs = bad = 0


def cap():
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def score(target, label):
    global runs, bad
    try:
        command = ([droptrace, 'score', target, '--calibration', calibration, '--output', f'{work}/out.h5'] if not dropping else
                   [droptrace, 'drop', target, '--target', 'attention', '--count', '1', '--calibration', calibration,
                    '--eval', calibration, '--speed-budget', '1', '--speed-max-rounds', '1', '--export', f'{work}/export'])
        r = subprocess.run(command, capture_output=True, text=True, timeout=20, preexec_fn=cap)
        rc, err = r.returncode, r.stderr
    except subprocess.TimeoutExpired:
        rc, err = 'timeout', ''
    runs += 1
    errors = [line for line in err.splitlines() if 'error' in line]
    if rc not in (0, 1, 64) or (rc != 0 and len(errors) != 1):
        bad += 1
        print(label, 'exit', rc, (err.strip().splitlines() or [''])[-1][:200], flush=True)
    if os.path.exists(f'{work}/out.h5'):
        os.remove(f'{work}/out.h5')
    shutil.rmtree(f'{work}/export', ignore_errors=True)


CONFIG_VALUES = [0, -1, 1, 3, 2**31, 2**62, 2**63 - 1, -2**63, 1e300, 0.5, -0.5, 1.5, 1e-300, True, "x", None, [], {}]
EXTRA_KEYS = [('partial_rotary_factor',), ('rotary_pct',), ('head_dim',), ('sliding_window',), ('drop_attn_list',),
              ('layer_types',), ('tie_word_embeddings',)]

if '--gguf-only' not in sys.argv:
    for model in sorted(os.listdir(f'{fixtures}/models')):
        if not model.endswith('-f32') or (os.environ.get('FUZZ_MODELS') and model not in os.environ['FUZZ_MODELS'].split()):
            continue
        base = json.load(open(f'{fixtures}/models/{model}/config.json'))
        paths = [(k, kk) for k, v in base.items() if isinstance(v, dict) for kk in v]
        paths += [(k, kk, kkk) for k, v in base.items() if isinstance(v, dict)
                  for kk, vv in v.items() if isinstance(vv, dict) for kkk in vv]
        paths += [(k,) for k, v in base.items()
                  if not isinstance(v, dict) and k not in ('architectures', 'model_type', 'transformers_version', 'dtype')]
        for path in paths + EXTRA_KEYS:
            for value in CONFIG_VALUES:
                config = json.loads(json.dumps(base))
                if len(path) == 3:
                    config[path[0]][path[1]][path[2]] = value
                elif len(path) == 2:
                    config[path[0]][path[1]] = value
                else:
                    config[path[0]] = value
                directory = f'{work}/{model}'
                shutil.rmtree(directory, ignore_errors=True)
                shutil.copytree(f'{fixtures}/models/{model}', directory)
                json.dump(config, open(f'{directory}/config.json', 'w'))
                score(directory, f'{model} {".".join(path)}={value!r}')

# GGUF: walk the metadata header and overwrite each numeric (non-tokenizer) value in place.
SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
ggufs = [f'{folder}/{name}' for folder in ('gguf', 'gguf-arch') for name in sorted(os.listdir(f'{fixtures}/{folder}'))
         if name.endswith('.gguf') and not name.startswith('unsupported')]
for file in ggufs:
    if os.environ.get('FUZZ_GGUFS') and os.path.basename(file) not in os.environ['FUZZ_GGUFS'].split():
        continue
    name = os.path.basename(file)
    data = open(f'{fixtures}/{file}', 'rb').read()
    pos = 8
    _, kv_count = struct.unpack_from('<QQ', data, pos)
    pos += 16
    targets = []
    for _ in range(kv_count):
        length, = struct.unpack_from('<Q', data, pos)
        key = data[pos + 8:pos + 8 + length].decode()
        pos += 8 + length
        kind, = struct.unpack_from('<I', data, pos)
        pos += 4
        if kind == 8:
            length, = struct.unpack_from('<Q', data, pos)
            pos += 8 + length
        elif kind == 9:
            element, count = struct.unpack_from('<IQ', data, pos)
            pos += 12
            for _ in range(count):
                pos += 8 + struct.unpack_from('<Q', data, pos)[0] if element == 8 else SIZES[element]
        else:
            if not key.startswith('tokenizer') and kind in (4, 5, 6, 10, 11, 12):
                targets.append((key, kind, pos))
            pos += SIZES[kind]
    for key, kind, offset in targets:
        floats = kind in (6, 12)
        wide = kind in (10, 11)
        for value in ([0.0, -1.0, float('nan'), float('inf'), 1e38, 1e-45] if floats
                      else [0, 1, 2, 3, 7, 64, 2**31 - 1, 2**32 - 1] + ([2**62, 2**63 - 1, 2**64 - 1] if wide else [])):
            mutated = bytearray(data)
            if kind == 6:
                struct.pack_into('<f', mutated, offset, value)
            elif kind == 12:
                struct.pack_into('<d', mutated, offset, value)
            elif kind in (4, 5):
                struct.pack_into('<I', mutated, offset, value & 0xFFFFFFFF)
            else:
                struct.pack_into('<Q', mutated, offset, value)
            path = f'{work}/{name}'
            open(path, 'wb').write(mutated)
            score(path, f'{name} {key}={value!r}')

print('runs', runs, 'bad', bad)
sys.exit(1 if bad else 0)
