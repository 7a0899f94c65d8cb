#!/usr/bin/env python3
"""Generates Sources/Tokenization/RegexUnicodeTables.swift: for each
character class a tokenizer regex can name, the code points where the set
ICU's Unicode data gives it differs from the set the Oniguruma inside the
Python `tokenizers` library gives it (its Unicode 16.0 tables).

Both engines are asked which code points one pattern matches, for \\w, \\d,
\\s, every POSIX bracket droptrace passes to ICU and every \\p{..} name
Oniguruma knows (except blocks, whose ranges do not move, and the names
droptrace refuses):
- the library: a Split pre-tokenizer (Removed, inverted) on a text of every
  code point of planes 0-3 and 14 (planes 4-13 are unassigned and 15-16
  private use in both);
- ICU: scripts/unicode/icu_probe.c, compiled here against libicu, on the
  same text, with the pattern spelled as droptrace spells it for ICU.
A name ICU does not know is left out: droptrace refuses a pattern using it.
`ICURegexSplitPattern` adds and removes the listed code points when it
spells the class for ICU, so the sets become the library's.

Usage (with the tokenizers package the ids are checked against, 0.23.3,
importable; needs cc and libicu-dev):
    python3 scripts/unicode/generate_regex_unicode_table.py
"""
import json
import os
import re
import subprocess
import tempfile

import tokenizers
from tokenizers import Regex, pre_tokenizers

from swift_ranges import swift_ranges

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUTPUT = os.path.join(ROOT, "Sources/Tokenization/RegexUnicodeTables.swift")
NAMES = os.path.join(ROOT, "Sources/Tokenization/OnigurumaPropertyNames.swift")
LIBRARY_UNICODE = "16.0"

UNIVERSE = [(0, 0xD7FF), (0xE000, 0x3FFFF), (0xE0000, 0xEFFFF)]
POINTS = [c for start, end in UNIVERSE for c in range(start, end + 1)]
TEXT = "".join(map(chr, POINTS))

# \w as droptrace spells it for ICU outside brackets (ICURegexSplitPattern).
ICU_WORD = r"[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\u00B2\u00B3\u00B9\u00BC-\u00BE]"
POSIX = ["alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "space", "upper"]
# Names droptrace refuses outright (PropertyNames.differing: other sets in ICU).
REFUSED = {"punct", "word", "xdigit"}
NOT_BLOCKS = {"incb", "inherited", "initialpunctuation", "inscriptionalpahlavi", "inscriptionalparthian"}


def probes():
    """(table key, Oniguruma pattern, ICU pattern), each matching single characters."""
    source = open(NAMES, encoding="utf-8").read()
    names = sorted(set(re.findall(r'"([a-z0-9]+)"', source)))
    triples = [(r"\w", r"\w", ICU_WORD), (r"\d", r"\d", r"\d"), (r"\s", r"\s", r"\s")]
    triples += [(f"[:{name}:]", f"[[:{name}:]]", f"[[:{name}:]]") for name in POSIX]
    triples += [(name, f"\\p{{{name}}}", f"\\p{{{name}}}") for name in names
                if name not in REFUSED and not (name.startswith("in") and name not in NOT_BLOCKS)]
    return triples


def library_matches(pattern):
    pieces = pre_tokenizers.Split(Regex(pattern), "removed", invert=True).pre_tokenize_str(TEXT)
    return {POINTS[i] for _, (start, end) in pieces for i in range(start, end)}


def icu_matches(patterns):
    """ICU's Unicode version and, per pattern, the set it matches (None: ICU refuses it)."""
    with tempfile.TemporaryDirectory() as work:
        probe = os.path.join(work, "icu_probe")
        subprocess.run(["cc", "-O2", "-o", probe, os.path.join(ROOT, "scripts/unicode/icu_probe.c"),
                        "-licui18n", "-licuuc"], check=True)
        request = " ".join(f"{s:X}-{e:X}" for s, e in UNIVERSE) + "\n" + "\n".join(patterns) + "\n"
        lines = subprocess.run([probe], input=request, capture_output=True, text=True, check=True).stdout.split("\n")
    results = []
    for line in lines[1:1 + len(patterns)]:
        if line.startswith("error"):
            results.append(None)
            continue
        found = set()
        for item in line.split():
            start, end = (int(x, 16) for x in item.split("-"))
            found.update(range(start, end + 1))
        results.append(found)
    return lines[0], results


def main():
    assert library_matches(r"\p{L}") >= {0x1C89}, "the library's tables are older than Unicode 16.0"
    triples = probes()
    version, icu = icu_matches([p for _, _, p in triples])
    differences, compared = {}, 0
    for (key, onig, _), icu_set in zip(triples, icu):
        if icu_set is None:
            continue
        try:
            library = library_matches(onig)
        except Exception:
            continue  # the library refuses the pattern itself.
        compared += 1
        if library != icu_set:
            differences[key] = (frozenset(library - icu_set), frozenset(icu_set - library))
    # One constant per distinct list, named by position.
    lists = sorted({points for pair in differences.values() for points in pair if points}, key=lambda p: (min(p), len(p)))
    name = {points: f"set{index}" for index, points in enumerate(lists)}
    case_changed = set().union(*differences["changeswhencasemapped"])
    entries = "\n".join(
        f'        {json.dumps(key)}: Difference(added: {name.get(added, "[]")}, removed: {name.get(removed, "[]")}),'
        for key, (added, removed) in sorted(differences.items()))
    constants = "\n".join(
        f"    private static let {name[points]}: [ClosedRange<UInt32>] = [\n{swift_ranges(points, width=118)}\n    ]"
        for points in lists)
    with open(OUTPUT, "w", encoding="utf-8") as out:
        out.write(f"""// Generated by scripts/unicode/generate_regex_unicode_table.py; do not edit.
// tokenizers {tokenizers.__version__} (Oniguruma, Unicode {LIBRARY_UNICODE}) against ICU with Unicode {version}:
// {compared} classes compared (\\w, \\d, \\s, POSIX brackets, every \\p{{..}} name but blocks), {len(differences)} differ.

/// Where ICU's character classes differ from the tokenizers library's.
enum RegexUnicodeTables {{
    /// ICU's Unicode version the table was made against.
    static let icuUnicodeVersion = "{version}"
    /// The Unicode version of the library's Oniguruma tables.
    static let libraryUnicodeVersion = "{LIBRARY_UNICODE}"

    /// Code points a class holds in the library but not in ICU (`added`)
    /// and in ICU but not in the library (`removed`).
    struct Difference: Sendable {{
        let added: [ClosedRange<UInt32>]
        let removed: [ClosedRange<UInt32>]
    }}

    /// By class: "\\\\w", "\\\\d", "\\\\s", a POSIX bracket ("[:alpha:]") or a
    /// \\p{{..}} name as Oniguruma compares names (lower case, without spaces,
    /// hyphens and underscores). Classes missing here are the same in both.
    static let differences: [String: Difference] = [
{entries}
    ]

    /// The characters whose case mappings differ (Changes_When_Casemapped
    /// in one version and not the other): under (?i) the library folds
    /// them with partners ICU does not know.
    static let caseMappingChanged: [ClosedRange<UInt32>] = [
{swift_ranges(case_changed, width=118)}
    ]

{constants}
}}
""")
    print(f"ICU {version}: {compared} classes compared, {len(differences)} differ, {len(lists)} distinct lists")


if __name__ == "__main__":
    main()
