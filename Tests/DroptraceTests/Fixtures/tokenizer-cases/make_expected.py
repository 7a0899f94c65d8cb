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
    "metaspace-first-replaced.json": ["ab", "abc", "cab", "c ab", "e\u0301a", "ab ab", "bab"],
    "nfc-long-combining-run.json": ["\u0340" * 65, "a" + "\u0340" * 65 + " b", "\u0344" * 33, "\u0301" * 63 + "\u0344",
                                    "e" + "\u0327\u0301" * 40 + "x"],
    "nfc-hangul.json": ["\uac00\u11a8 x", "\u1100\u1161\u11a8", "\u1100\u1161 \uac00", "e\u0301 \uac00\u11a8\u11a8", "\u11a8\uac00"],
    "line-anchors.json": ["a\u2028x", "a\rx", "a\nx", "a\u0085x", "a\u2029x", "ab\rab\nab", "x\rx\u2028x"],
    "replace-empty-matches.json": ["Hello World", "axxb", "x", "", "\u00c4\u00d6\u00fc \u00c9x", "HelloWorld xx", "aBcD",
                                   " Ab  Cd ", "\u00e9\u00c9x", "HeZed aZed", "xHxe"],
    "repeated-keys.json": ["Hello", "aHa", "llo lo", "Hallo"],
    "template-equivalent-names.json": ["ab", "e\u0301 \u00e9 ab", ""],
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

expected = {}
for name, texts in TEXTS.items():
    tok = Tokenizer.from_file(name)
    expected[name] = [{"text": text,
                       "with": tok.encode(text).ids,
                       "without": tok.encode(text, add_special_tokens=False).ids} for text in texts]
expected["generator"] = {"tokenizers": tokenizers.__version__}
with open("expected.json", "w", encoding="utf-8") as out:
    json.dump(expected, out, ensure_ascii=False, indent=1)
