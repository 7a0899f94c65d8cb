"""Writes expected.json: the ids the Python `tokenizers` package gives for
each hand-written tokenizer here and a few probing texts.

    pip install tokenizers==0.23.3 sentencepiece==0.2.3 && python make_expected.py

expected.json: {"<file>": [{"text": str, "with": [ids], "without": [ids]}]}
where "with"/"without" are tok.encode(text, add_special_tokens=True/False).ids,
or {"text": str, "error": str} where the library fails on the text.

It first writes precompiled-rules.json, the one case not written by hand: a
SentencePiece unigram model trained with the normalisation rules below,
converted as transformers converts a SentencePiece model, so that its
Precompiled normalizer holds a small charsmap. expected.json's
"precompiled-charsmap-variants" are that charsmap broken in the ways a file
could be, each with what the library does: refuse to load it, fail (panic) on
a text, or give ids.
"""
import base64
import json
import random
import tempfile
from pathlib import Path

import tokenizers
from tokenizers import Tokenizer

# SentencePiece normalisation rules (code points in hex, source TAB target):
# CR LF is one grapheme, rewritten whole; CR alone is not; "e" is a key
# shorter than "e" + U+0301, which the library's rule picks for the grapheme;
# U+0301 alone is deleted; a ligature and a space widen; ASCII is rewritten.
RULES = "0D 0A\t0A\n0D\t20\n65 301\tE9\n65\t45\n301\t\nFB01\t66 69\n41\t61\n3000\t20\n"


def write_precompiled_rules():
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb
    from transformers.convert_slow_tokenizer import SpmConverter

    with tempfile.TemporaryDirectory() as work:
        (Path(work) / "rules.tsv").write_text(RULES)
        spm.SentencePieceTrainer.train(
            input=str(Path(__file__).parent.parent / "text" / "train.txt"), model_prefix=f"{work}/rules",
            model_type="unigram", vocab_size=100, normalization_rule_tsv=f"{work}/rules.tsv", num_threads=1,
            hard_vocab_limit=False, minloglevel=2)
        proto = pb.ModelProto()
        proto.ParseFromString(Path(f"{work}/rules.model").read_bytes())
    vocab = [(piece.piece, piece.score) for piece in proto.pieces]
    tok = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab)
    with open("precompiled-rules.json", "w", encoding="utf-8") as out:
        out.write(tok.to_str(pretty=True) + "\n")


def charsmap_variants():
    """The rules' charsmap broken: a trie longer than the file, no padding,
    replacement texts that are not UTF-8, an empty trie, values and units
    pointing outside, and units overwritten at random."""
    document = json.load(open("precompiled-rules.json", encoding="utf-8"))
    steps = document["normalizer"]["normalizers"]
    good = base64.b64decode(steps[0]["precompiled_charsmap"])
    trie = int.from_bytes(good[:4], "little")
    units = trie // 4

    def with_unit(blob, index, value):
        at = 4 + 4 * index
        return blob[:at] + value.to_bytes(4, "little") + blob[at + 4:]

    encoded = [base64.b64encode(good[:4] + good[4:4 + trie - 4]).decode(),  # the trie cut short
               base64.b64encode(good).decode().rstrip("="),  # the library reads it without its padding
               base64.b64encode(good).decode() + "==",
               base64.b64encode(good + b"\xff\xfe").decode(),
               base64.b64encode((0).to_bytes(4, "little") + good[4 + trie:]).decode(),
               base64.b64encode(good[:4 + trie] + b"").decode()]  # no replacement texts: values point past them
    # Units the probing texts reach: the root and its children for their first bytes.
    root_offset = int.from_bytes(good[4:8], "little") >> 10 << ((int.from_bytes(good[4:8], "little") & 512) >> 6)
    reached = sorted({0} | {root_offset ^ byte for byte in "".join(TEXTS["precompiled-rules.json"]).encode()
                            if (root_offset ^ byte) < units})
    rng = random.Random(15)
    for _ in range(24):
        blob = good
        for _ in range(rng.choice([1, 2])):
            index = rng.choice(reached) if rng.random() < 0.75 else rng.randrange(units)
            old = int.from_bytes(blob[4 + 4 * index:8 + 4 * index], "little")
            # Anything, or the same label and leaf flag with another offset or value.
            new = rng.choice([rng.getrandbits(32), (old & 0x1FF) | rng.getrandbits(23) << 9, old ^ 1 << rng.randrange(32)])
            blob = with_unit(blob, index, new)
        encoded.append(base64.b64encode(blob).decode())
    variants = []
    for charsmap in encoded:
        steps[0]["precompiled_charsmap"] = charsmap
        try:
            tok = Tokenizer.from_str(json.dumps(document))
        except BaseException as error:  # the library's panics are BaseExceptions
            variants.append({"charsmap": charsmap, "load_error": str(error)})
            continue
        variants.append({"charsmap": charsmap, "texts": [outcome(tok, text) for text in TEXTS["precompiled-rules.json"]]})
    return variants


# Number literals whose f64 serde_json (as the library builds it) reads
# otherwise than the nearest double: 17 significant digits, 20 digits and
# more (dropped past the u64), exponents, denormals.
FLOAT_LITERALS = ["-7.2847161293029785", "-10.321771106309559", "-10.32177110630956", "0.1", "-3.0000000000000004",
                  "123456789012345678901234567890", "18446744073709551619.5", "18446744073709551615", "1.5e-5",
                  "-2.2250738585072014e-308", "4.9406564584124654e-324", "1e-400", "-0.0", "-0", "9007199254740993",
                  "0.30000000000000004441", "1.7976931348623157e308", "12345678901234567890123e-10"]


def serde_floats():
    """What the library reads each literal as: the score of a Unigram piece,
    written back by its serializer (shortest round-trip digits), here as the
    value's IEEE bits."""
    import struct

    values = []
    for literal in FLOAT_LITERALS:
        document = {"model": {"type": "Unigram", "unk_id": None, "vocab": [["a", "SCORE"]]}}
        tok = Tokenizer.from_str(json.dumps(document).replace('"SCORE"', literal))
        score = json.loads(tok.to_str())["model"]["vocab"][0][1]
        values.append({"literal": literal, "bits": struct.unpack("<Q", struct.pack("<d", float(score)))[0]})
    return values


def outcome(tok, text):
    try:
        return {"text": text, "with": tok.encode(text).ids, "without": tok.encode(text, add_special_tokens=False).ids}
    except BaseException as error:  # a panic (PanicException) as well as an error
        return {"text": text, "error": str(error)}


TEXTS = {
    "pairs-ignore-merges.json": ["ab abc cab ddd dddd abcab x dab", "", "cab  cab", "abcabc"],
    "legacy-merges.json": ["ab abc cab ddd dddd abcab x dab", "", "cab  cab", "abcabc"],
    "digits-and-splits.json": ["ab a,b 123 a123b a-4 12,3 b;c ab-12;", "abbbc-4;bb 1234", "c-a ²٣ 34-", "", "-",
                               "[S]a[E]"],
    "digits-individual.json": ["a123 a1 12 ٣٣ a", "1212"],
    "added-tokens.json": ["HELLO there <mask> cat", "a <mask>   b", "concat cat, cat_x xcat CAT",
                          "Héllo hello <MASK>", "[CLS] x [SEP]", "zzz q", "  <mask>", "cat"],
    "subword-affixes.json": ["ab ab a b aab é aé ba x€ abab", "é", "aaa"],
    "split-empty-matches.json": ["abbc", "abbcbb c", "cab", "bbbb", "", "aébbc"],
    "split-empty-pattern.json": ["abbc", "ab ab", "aébbc", ""],
    "metaspace-first-normalized.json": [" ab", "xab", "\u0301ab", "ab", "x ab", "  b ab", "\u0301"],
    "metaspace-first-replaced.json": ["ab", "abc", "cab", "c ab", "e\u0301a", "ab ab", "bab"],
    "nfc-long-combining-run.json": ["\u0340" * 65, "a" + "\u0340" * 65 + " b", "\u0344" * 33, "\u0301" * 63 + "\u0344",
                                    "e" + "\u0327\u0301" * 40 + "x"],
    "nfc-hangul.json": ["\uac00\u11a8 x", "\u1100\u1161\u11a8", "\u1100\u1161 \uac00", "e\u0301 \uac00\u11a8\u11a8", "\u11a8\uac00"],
    "line-anchors.json": ["a\u2028x", "a\rx", "a\nx", "a\u0085x", "a\u2029x", "ab\rab\nab", "x\rx\u2028x"],
    "replace-empty-matches.json": ["Hello World", "axxb", "x", "", "\u00c4\u00d6\u00fc \u00c9x", "HelloWorld xx", "aBcD",
                                   " Ab  Cd ", "\u00e9\u00c9x", "HeZed aZed", "xHxe"],
    "repeated-keys.json": ["Hello", "aHa", "llo lo", "Hallo"],
    "template-equivalent-names.json": ["ab", "e\u0301 \u00e9 ab", ""],
    "unigram.json": ["ab", "ba x", "", "aab"],
    # Scores read as serde_json reads them ("a" and "ab" tie only so); a piece
    # given twice (the last counts); ties kept by the first path; byte
    # fallback with one byte piece; the text "<unk>" fused with unknowns; an
    # added token numbered after every piece, repeats included.
    "unigram-scores.json": ["ab", "cd", "cdc", "A", "A\u00c4", "\u00c4", "<unk>", "Q<unk>e", "A<unk>", "zz ab", "e  e", "",
                            "abcd ecd"],
    # No unk_id: the library fails where an unknown piece would join a best
    # path so far ("ac"), not where a longer piece covers it first ("bc").
    "unigram-no-unk.json": ["ab", "a b", "bc", "abc", "ac", "c"],
    "precompiled-rules.json": ["A\r\nB\rC", "e\u0301 e\u0301\u0301 e\u0301\u0301\u0301 \u0301x", "\ufb01ne\u3000Ae",
                               "Ae\r\n\r\n", "\u00e9 x\u0301\r"],
}
# The pre-tokenizers that split at kinds of characters: every pair of the
# alphabet is a merge, so two characters of one piece become one token.
SPLITTING_TEXTS = ["ab a_b a'b a,b 1.1 a-b", "a\u00a0b a\u3000b a\u0085b a\u200bb a\u180eb a\tb a\nb",
                   "\u00a1a\u00ab \u2014a\u3001b\u00b7 $a+b^`", "ae\u0301 \u00e9a  ,, ..", "", " ", "a"]
for name in ["pretokenizer-whitespace.json", "pretokenizer-whitespace-split.json", "pretokenizer-punctuation.json",
             "pretokenizer-bert.json", "pretokenizer-char-delimiter.json"]:
    TEXTS[name] = SPLITTING_TEXTS
# Whitespace's word class is Rust regex's \w, not Oniguruma's: ZWNJ/ZWJ are word characters, the
# Latin-1 ² ³ ¹ ¼ ½ ¾ are not (⁴, VS16 and digits classed alike in both).
TEXTS["pretokenizer-whitespace-word-class.json"] = [
    "a\u00b2a a\u00bdb \u00b9\u00bc\u00be\u00b3 a\u2074_1", "a\u200db a\u200cb \u200c\u200d", "!\u200d! a\ufe0f\u200d!",
    "1\u00bd! \u00b2\u200d\u00b3 _\u00be_", ""]
# The quicktour's BPE (Whitespace pre-tokenizer), trained on the README's start.
TEXTS["pretokenizer-whitespace-trained.json"] = [
    "droptrace measures how redundant each module of a transformer is, across a whole training run.",
    "It's 1 − mean cos(x, y): «attention» — 48% faster; naïve café_au_lait\u00a0x\u3000y\u200bz \U0001F600!!",
    "tab\tnew\nline\r\nend  \u0085 \u2028 done."]

write_precompiled_rules()
expected = {}
for name, texts in TEXTS.items():
    tok = Tokenizer.from_file(name)
    expected[name] = [outcome(tok, text) for text in texts]
expected["precompiled-charsmap-variants"] = charsmap_variants()
expected["serde-floats"] = serde_floats()
expected["generator"] = {"tokenizers": tokenizers.__version__}
with open("expected.json", "w", encoding="utf-8") as out:
    json.dump(expected, out, ensure_ascii=False, indent=1)
