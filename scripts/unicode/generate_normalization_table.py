#!/usr/bin/env python3
"""Generates Sources/Tokenization/LibraryNormalizationTable.swift: where the
`tokenizers` library's NFC, NFD, NFKC and NFKD (the tables of its
unicode-normalization-alignments crate, an older Unicode version) and
Foundation's normalization, which droptrace's UnicodeFormNormalizer calls,
part ways.

For every Unicode scalar the script asks both the same questions: its NFD,
NFKD, NFC and NFKC, the NFC of its NFD, and its NFD and NFKD with a mark of
the lowest class (U+0334, class 1) after it and one of the highest (U+0345,
class 240) before it. The library is asked here; Foundation by
scripts/unicode/foundation_normalization.swift (run with `swift -O`). A
scalar "has normalization data" on a side when any answer is not the
scalar itself (the probes: not the scalar's form beside the mark), or when
it occurs in the NFD of a character that side composes back (a composition
component).

Written out, as ranges:
- `unknownToLibrary`: scalars with normalization data in Foundation and
  none in the library. To the library these are starters that decompose,
  reorder and compose with nothing, so droptrace normalizes the text
  between them and keeps them as they are.
- `canonicalReorderingSlips` / `compatibilityReorderingSlips`: scalars the
  library knows whose decomposition Foundation does not reorder with the
  marks around it (U+0F73 is U+0F71 U+0F72, which go before a U+0345 in
  front of it; U+0385 is U+0020 U+0308 U+0301 in NFKD, which a following
  U+0334 goes before). droptrace hands Foundation these scalars decomposed.

The script stops, naming the scalar, if the two sides differ in any other
way (a scalar the library knows and Foundation does not, a different
decomposition or composition, or a composition Foundation makes from
scalars the library knows): splitting could not make such text agree.

Usage: python3 scripts/unicode/generate_normalization_table.py  (with the
tokenizers package the ids are checked against, 0.23.3, importable; needs
swift).
"""
import os
import subprocess
import sys

import tokenizers
from tokenizers import normalizers

from swift_ranges import swift_ranges

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUTPUT = os.path.join(ROOT, "Sources/Tokenization/LibraryNormalizationTable.swift")
COMPANION = os.path.join(ROOT, "scripts/unicode/foundation_normalization.swift")

SEPARATOR = "\x01"  # a starter that no form changes or composes with
SCALARS = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF and chr(c) != SEPARATOR]
FIELDS = ("NFD", "NFKD", "NFC", "NFKC", "NFC of NFD",
          "NFD with U+0334 after", "NFD with U+0345 before", "NFKD with U+0334 after", "NFKD with U+0345 before")


def hex_string(text):
    return " ".join(f"{ord(c):X}" for c in text)


def library_answers():
    """scalar -> FIELDS, for the scalars with any answer not trivial."""
    nfd, nfkd, nfc, nfkc = normalizers.NFD(), normalizers.NFKD(), normalizers.NFC(), normalizers.NFKC()

    def each(normalizer, texts):
        result = normalizer.normalize_str(SEPARATOR.join(texts)).split(SEPARATOR)
        assert len(result) == len(texts)
        return result

    chars = [chr(c) for c in SCALARS]
    decomposed, compatible = each(nfd, chars), each(nfkd, chars)
    forms = [decomposed, compatible, each(nfc, chars), each(nfkc, chars), each(nfc, decomposed)]
    after, before = [c + "\u0334" for c in chars], ["\u0345" + c for c in chars]
    probes = [each(nfd, after), each(nfd, before), each(nfkd, after), each(nfkd, before)]
    answers = {}
    for i, c in enumerate(SCALARS):
        row = tuple(hex_string(field[i]) for field in forms + probes)
        plain = tuple(hex_string(text) for text in (decomposed[i] + "\u0334", "\u0345" + decomposed[i],
                                                    compatible[i] + "\u0334", "\u0345" + compatible[i]))
        if any(field != f"{c:X}" for field in row[:5]) or row[5:] != plain:
            answers[c] = row
    return answers


def foundation_answers():
    output = subprocess.run(["swift", "-O", COMPANION], check=True, capture_output=True, text=True).stdout
    answers = {}
    for line in output.splitlines():
        scalar, *row = line.split(";")
        answers[int(scalar, 16)] = tuple(row)
    return answers


def scalars_of(field):
    return [int(part, 16) for part in field.split()]


def components(answers):
    """Scalars in the NFD of a character that the NFC of that NFD gives back."""
    found = set()
    for c, row in answers.items():
        if row[0] != f"{c:X}" and row[4] == f"{c:X}":
            found.update(scalars_of(row[0]))
    return found


def fail(message):
    sys.exit(f"generate_normalization_table.py: {message}")


def trivial(c):
    """The answers for a scalar without normalization data."""
    name = f"{c:X}"
    return (name,) * 5 + (f"{name} 334", f"345 {name}") * 2


def main():
    library = library_answers()
    foundation = foundation_answers()
    library_knows = set(library) | components(library)
    foundation_knows = set(foundation) | components(foundation)
    if library_knows - foundation_knows:
        fail(f"the library has normalization data Foundation lacks: U+{min(library_knows - foundation_knows):04X}")
    unknown = foundation_knows - library_knows

    canonical, compatibility = set(), set()
    for c in sorted(library_knows):
        lib, found = library.get(c, trivial(c)), foundation.get(c, trivial(c))
        differing = [FIELDS[i] for i in range(5) if lib[i] != found[i]]
        if differing:
            fail(f"U+{c:04X} differs in {', '.join(differing)}: library {lib}, Foundation {found}")
        if lib[5:7] != found[5:7]:
            canonical.add(c)
        if lib[7:9] != found[7:9]:
            compatibility.add(c)
    for c, row in foundation.items():
        composes = row[0] != f"{c:X}" and row[4] == f"{c:X}"
        if composes and library.get(c, trivial(c))[4] != f"{c:X}" and not unknown & set(scalars_of(row[0])):
            fail(f"Foundation composes U+{c:04X} from scalars the library knows")

    source = f"""// Generated by scripts/unicode/generate_normalization_table.py from tokenizers {tokenizers.__version__}
// (its unicode-normalization-alignments tables) and Foundation's normalization; do not edit.

/// Where the `tokenizers` library's normalization data and Foundation's part
/// ways (the library's tables are of an older Unicode version).
enum LibraryNormalizationTable {{
    /// Scalars that Foundation decomposes, reorders or composes and the
    /// library's tables do not know: to the library they are starters that
    /// nothing combines with.
    static let unknownToLibrary: [ClosedRange<UInt32>] = [
{swift_ranges(unknown)}
    ]

    /// Scalars whose canonical decomposition Foundation does not reorder
    /// with the marks around it as the library does.
    static let canonicalReorderingSlips: [ClosedRange<UInt32>] = [
{swift_ranges(canonical)}
    ]

    /// The same for compatibility decompositions (NFKC, NFKD).
    static let compatibilityReorderingSlips: [ClosedRange<UInt32>] = [
{swift_ranges(compatibility)}
    ]
}}
"""
    with open(OUTPUT, "w", encoding="utf-8") as out:
        out.write(source)
    print(f"{OUTPUT}: {len(unknown)} scalars unknown to the library; Foundation slips reordering "
          f"{len(canonical)} canonical and {len(compatibility)} compatibility decompositions")


if __name__ == "__main__":
    main()
