// Foundation's normalization of every Unicode scalar, for
// generate_normalization_table.py (which asks the tokenizers library the
// same questions). Run with `swift -O`; writes one line per scalar that any
// form changes or that reorders with a mark, as
//     scalar;NFD;NFKD;NFC;NFKC;NFC of its NFD;NFD with U+0334 after;NFD with U+0345 before;NFKD with U+0334 after;NFKD with U+0345 before
// in hexadecimal, scalars of a field separated by spaces. NFKC is NFC of
// NFKD, as droptrace computes it (UnicodeFormNormalizer). U+0334 and U+0345
// are the marks of the lowest and the highest combining class (1 and 240).
import Foundation

func hex(_ text: String) -> String {
    text.unicodeScalars.map { String($0.value, radix: 16, uppercase: true) }.joined(separator: " ")
}

var lines: [String] = []
for value in UInt32(0)...0x10FFFF {
    guard let scalar = Unicode.Scalar(value) else { continue }
    let text = String(scalar)
    let nfd = text.decomposedStringWithCanonicalMapping
    let nfkd = text.decomposedStringWithCompatibilityMapping
    let forms = [nfd, nfkd, text.precomposedStringWithCanonicalMapping, nfkd.precomposedStringWithCanonicalMapping,
                 nfd.precomposedStringWithCanonicalMapping].map(hex)
    let probes = [(text + "\u{334}").decomposedStringWithCanonicalMapping, ("\u{345}" + text).decomposedStringWithCanonicalMapping,
                  (text + "\u{334}").decomposedStringWithCompatibilityMapping, ("\u{345}" + text).decomposedStringWithCompatibilityMapping]
    let plain = [nfd + "\u{334}", "\u{345}" + nfd, nfkd + "\u{334}", "\u{345}" + nfkd].map(hex)
    let name = hex(text)
    if forms.contains(where: { $0 != name }) || probes.map(hex) != plain {
        lines.append(([name] + forms + probes.map(hex)).joined(separator: ";"))
    }
}
print(lines.joined(separator: "\n"))
