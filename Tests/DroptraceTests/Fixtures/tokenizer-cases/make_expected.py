"""Writes expected.json: the ids the Python `tokenizers` package gives for
each hand-written tokenizer here and a few probing texts.

    pip install tokenizers==0.23.3 && python make_expected.py

expected.json: {"<file>": [{"text": str, "with": [ids], "without": [ids]}]}
where "with"/"without" are tok.encode(text, add_special_tokens=True/False).ids.
unigram.json is absent on purpose: droptrace refuses non-BPE models.
"""
import json
import tokenizers
from tokenizers import Tokenizer

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
    "nfc-hangul.json": ["\uac00\u11a8 x", "\u1100\u1161\u11a8", "\u1100\u1161 \uac00", "e\u0301 \uac00\u11a8\u11a8", "\u11a8\uac00"],
    "line-anchors.json": ["a\u2028x", "a\rx", "a\nx", "a\u0085x", "a\u2029x", "ab\rab\nab", "x\rx\u2028x"],
    "replace-empty-matches.json": ["Hello World", "axxb", "x", "", "\u00c4\u00d6\u00fc \u00c9x", "HelloWorld xx", "aBcD",
                                   " Ab  Cd ", "\u00e9\u00c9x", "HeZed aZed", "xHxe"],
    "repeated-keys.json": ["Hello", "aHa", "llo lo", "Hallo"],
    "template-equivalent-names.json": ["ab", "e\u0301 \u00e9 ab", ""],
}

expected = {}
for name, texts in TEXTS.items():
    tok = Tokenizer.from_file(name)
    expected[name] = [{"text": text,
                       "with": tok.encode(text).ids,
                       "without": tok.encode(text, add_special_tokens=False).ids} for text in texts]
expected["generator"] = {"tokenizers": tokenizers.__version__}
with open("expected.json", "w", encoding="utf-8") as out:
    json.dump(expected, out, ensure_ascii=False, indent=1)
