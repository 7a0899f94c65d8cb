import CICURegex
import DroptraceSupport
import Foundation

/// Any other regex from a tokenizer.json, run by ICU's regex engine with a
/// step budget, so that a pattern with catastrophic backtracking is an error
/// naming the file and the pattern instead of a hang.
///
/// The Rust library uses Oniguruma. For \p{..} classes, \s, \d, (?i:..),
/// look-ahead and alternation the two agree (checked character by character
/// against the Python package); the constructs that differ are rewritten
/// or refused by `translatedToICU`, and empty matches are reported as
/// Oniguruma reports them. `^` and `$` match at line breaks in Oniguruma's
/// default (Ruby) syntax, hence ICU's multiline mode, and only at "\n"
/// there (not at "\r", U+0085, U+2028 or U+2029), hence ICU's Unix lines.
struct ICURegexSplitPattern: SplitPattern {
    let pattern: String
    /// The file the pattern came from, named in errors.
    let source: String
    private let regex: CompiledICURegex
    /// True for any regex a tokenizer.json gives (`"[^"]*"` spans to the
    /// next quote); false for the library's own fixed patterns whose matches
    /// end within a run of one kind of character.
    let looksArbitrarilyFarAhead: Bool
    /// Whether text is checked for characters the library folds with other
    /// partners under (?i) than ICU (`ICUCharacterClasses`).
    private let checksCaseMapping: Bool

    /// Step budgets in ICU's time-limit units ("ticks" of 10,000 engine
    /// steps, about a millisecond). A search (one piece of text) gets 50
    /// ticks plus 100 steps per UTF-16 unit (the tokenizer regexes take
    /// about 3), so backtracking on a short piece stops within a tenth of a
    /// second and a pattern that is merely polynomial cannot run away on a
    /// long one; within it, one match attempt gets 500 ticks plus 4 steps per
    /// unit left in the text, so a linear pattern may still match across a
    /// long text while exponential backtracking stops within seconds.
    static let budget = droptrace_regex_budget(
        attempt_base: 500, attempt_per_mega_unit: 400, total_base: 50, total_per_mega_unit: 10_000)

    /// Runs `body` (the encoding of one text) with every regex search on
    /// this thread drawing on one shared budget: 500 ticks plus 100 steps
    /// per byte of the text. Each piece's own budget stops backtracking on
    /// that piece; this one stops a pattern that takes most of its budget on
    /// every one of many short pieces, whose total would grow without end
    /// (tens of thousands of pieces at a few milliseconds each).
    static func sharingOneBudget<T>(textBytes: Int, _ body: () throws -> T) rethrows -> T {
        let started = droptrace_regex_ledger_begin(Int64(500 + textBytes / 100))
        defer { if started == 1 { droptrace_regex_ledger_end() } }
        return try body()
    }

    /// - Parameter boundedMatches: the pattern is one of the library's own
    ///   (the Whitespace pre-tokenizer's), whose matches end within a run of
    ///   one kind of character.
    /// - Throws: `DroptraceError` naming `source` when the pattern uses a
    ///   construct `translatedToICU` refuses or ICU cannot compile it.
    init(pattern: String, source: String, boundedMatches: Bool = false) throws(DroptraceError) {
        self.pattern = pattern
        self.source = source
        looksArbitrarilyFarAhead = !boundedMatches
        let translated: ICUTranslation
        do throws(DroptraceError) {
            translated = try Self.translatedToICU(pattern)
        } catch {
            throw DroptraceError(error.message, path: source)
        }
        checksCaseMapping = translated.checksCaseMapping
        regex = try CompiledICURegex(translated.pattern, failure: { reason in
            DroptraceError("invalid regex \(quoted(pattern)) (\(reason))", path: source)
        })
    }

    /// Rewrites the Oniguruma constructs whose ICU meaning differs, and
    /// refuses those ICU has no simple spelling for. Each was found by
    /// running it through both engines on every character below U+0300 and
    /// the Unicode spaces and line breaks:
    /// - \w outside brackets is ICU's without the zero-width joiners and with
    ///   the superscript digits and vulgar fractions of Latin-1 (Oniguruma's
    ///   Latin-1 table counts them as word characters); inside brackets it
    ///   is ICU's without the joiners. \h is a hex digit (ICU: horizontal
    ///   space), \v only U+000B (ICU: any vertical space), \V the letter V
    ///   and [\b] a backspace (ICU: the letter b). `.` excludes only \n (ICU
    ///   also excludes \r, \v, \f, U+0085, U+2028, U+2029). Inside brackets
    ///   the positive sets are spliced in and the negated ones nested, which
    ///   ICU reads as a union.
    /// - Every class (\w, \d, \s, \p{..}, POSIX brackets) holds the
    ///   library's characters for its Unicode version (`ICUCharacterClasses`).
    /// - \b and \B are look-arounds on \w: ICU's ignore combining marks
    ///   (" \u{301}a" has a boundary before the mark in Oniguruma, before
    ///   the "a" in ICU).
    /// - Under (?i), Oniguruma folds the case of brackets and characters but
    ///   not of a \p{..} outside brackets (`(?i)\p{Lu}` does not match "a";
    ///   ICU's does), which is therefore spelled inside (?-i:..).
    /// - An empty pattern matches empty text at every position; ICU refuses
    ///   to compile one, so it becomes an empty group.
    /// - Refused: \X (grapheme clusters: ICU 72 keeps an Indic conjunct such
    ///   as "\u{915}\u{94D}\u{937}" together, the library splits it), \y
    ///   and \Y (text-segment boundaries), \N, \O, \K, \G (where the search
    ///   resumes: the two engines differ after an empty match), \o{..},
    ///   \g<..>, \Q, \C-x, \M-x and \ followed by a digit (octal in
    ///   Oniguruma where ICU reads a backreference or other octal digits);
    ///   \p{Word}, \p{XDigit} and POSIX [:punct:], [:word:], [:xdigit:]
    ///   (other sets in ICU); option letters other than i ((?m) is dot-all in
    ///   Oniguruma but multi-line in ICU, (?x) differs inside brackets); a
    ///   bracket expression that is a POSIX name alone (`[:alpha:]`, a set in
    ///   ICU, the characters : a l p h in Oniguruma) and `--` inside brackets
    ///   (set difference in ICU); a repeat count above 100000 (Oniguruma
    ///   refuses the pattern; the tokenizers library then refuses the file).
    /// - Counts are read as Oniguruma reads them: `{,m}` is `{0,m}`, `{n,m}`
    ///   with n > m the possessive `{m,n}+`, and a "{" that starts no count
    ///   (`a{b}`, `{,}`) or a "}" that ends none is itself (ICU refuses all
    ///   four). Refused: a "+" after a count, a "?" after an exact one, and
    ///   any repeat after a possessive one (a second repeat in Oniguruma).
    /// - Brackets are read with Oniguruma's rules for "-": a range between
    ///   two characters, otherwise a literal (written escaped for ICU), and
    ///   refused, as the library refuses it, next to a class (`[\d-z]`,
    ///   `[a-\w]`); "&", "$", "{" and "}" in brackets are literals.
    /// - `\pL` without braces is the letters "pL"; `\p{..}` names must be
    ///   Oniguruma's (`OnigurumaPropertyNames`; `\p{^..}` negates, `In_..`
    ///   is a block); `\cX` is Oniguruma's control character (`\c?` DEL), a
    ///   trailing `\c` or backslash is refused as the library refuses it.
    ///
    /// - Throws: `DroptraceError` (without a path) naming the construct refused.
    static func translatedToICU(
        _ pattern: String, classes unicode: ICUCharacterClasses = .linked
    ) throws(DroptraceError) -> ICUTranslation {
        guard !pattern.isEmpty else { return ICUTranslation(pattern: "(?:)", checksCaseMapping: false) }
        // An escape is matched whole first, so `\{` is never read as a count.
        for count in pattern.matches(of: #/\\.|\{(\d*),?(\d*)\}/#)
        where [count.1, count.2].contains(where: { ($0.flatMap { Int($0) } ?? 0) > 100_000 || ($0?.count ?? 0) > 9 }) {
            throw DroptraceError(
                "regex \(quoted(pattern)) repeats \(count.0) times, beyond Oniguruma's 100000; the tokenizers library refuses it")
        }
        let wordInBrackets = #"\p{Alphabetic}\p{M}\p{Nd}\p{Pc}"#
        let word = wordInBrackets + #"\u00B2\u00B3\u00B9\u00BC-\u00BE"#
        let scalars = Array(pattern.unicodeScalars)
        var output = ""
        // One state per open bracket, innermost last (see `ClassState`).
        var classes: [ClassState] = []
        // Whether (?i) is on here, how many "(?i)" groups opened here wait
        // for the end of the enclosing group, and both outside each open group.
        var caseless = false
        var optionGroups = 0
        var enclosing: [(caseless: Bool, optionGroups: Int)] = []
        var checksCaseMapping = false
        var lastValue: UInt32?
        var index = 0
        func refuse(_ construct: String) -> DroptraceError {
            DroptraceError("regex \(quoted(pattern)) uses \(construct), which the tokenizers library (Oniguruma) reads differently from ICU; droptrace cannot run it")
        }
        func libraryRefuses(_ construct: String) -> DroptraceError {
            DroptraceError("regex \(quoted(pattern)) has \(construct), which Oniguruma rejects; the tokenizers library refuses it")
        }
        /// The text from `index` up to and including the first `end`, if any.
        func upTo(_ end: Unicode.Scalar, from start: Int) -> String? {
            guard let stop = scalars[start...].firstIndex(of: end) else { return nil }
            return String(String.UnicodeScalarView(scalars[start...stop]))
        }
        /// The name of a POSIX bracket `[:name:]` or `[:^name:]` starting at `start`.
        func posixName(at start: Int) -> String? {
            guard start + 1 < scalars.count, scalars[start + 1] == ":",
                  let bracket = upTo("]", from: start), bracket.hasSuffix(":]"), bracket.count > 4 else { return nil }
            let name = bracket.dropFirst(2).dropLast(2)
            return name.allSatisfy { $0.isLetter || $0 == "^" } ? String(name) : nil
        }
        /// Records a value in the innermost brackets, as Oniguruma's
        /// `cc_char_next` / `cc_cprop_next` do: a class (\d, \p{..},
        /// [:alpha:]) cannot end a range. Under (?i), notes characters and
        /// classes whose case folding differs between the engines: Oniguruma
        /// lets a bracket holding ß, ﬅ or another character whose folding is
        /// several characters match those ("ss", "st"), ICU does not; and
        /// some characters have other partners (`ICUCharacterClasses`).
        func classValue(isSet: Bool, value: UInt32? = nil, readsUnicode: Bool = true) throws(DroptraceError) {
            let state = classes.last
            if caseless, let value {
                let covered = state == .range ? (lastValue ?? value)...max(lastValue ?? value, value) : value...value
                if state != nil, MultipleCaseFolding.ranges.contains(where: { $0.overlaps(covered) }) {
                    throw refuse("a character whose case folding is several characters in brackets under (?i)")
                }
                if try unicode.caseMappingDiffers(in: covered, construct: "regex \(quoted(pattern)) under (?i)") {
                    checksCaseMapping = true
                }
            } else if caseless, isSet, readsUnicode, state != nil,
                      try unicode.caseMappingDiffers(in: 0x80...0x10FFFF, construct: "regex \(quoted(pattern)) under (?i)") {
                checksCaseMapping = true
            }
            guard let state else { return }
            lastValue = value
            if state == .range {
                if isSet { throw libraryRefuses("a range ending in a character class") }
                classes[classes.count - 1] = .complete
            } else {
                classes[classes.count - 1] = isSet ? .set : .character
            }
        }
        /// The escape after a backslash: \xHH, \x{..}, \uHHHH and \p{..}
        /// are taken whole, so their digits and braces are not read as
        /// characters of a bracket expression.
        func escapeTail(from start: Int) -> String {
            var end = start
            switch scalars[start - 1] {
            case "x" where start < scalars.count && scalars[start] == "{", "p" where start < scalars.count && scalars[start] == "{",
                 "P" where start < scalars.count && scalars[start] == "{":
                end = scalars[start...].firstIndex(of: "}").map { $0 + 1 } ?? scalars.count
            case "x":
                while end < scalars.count, end - start < 2, scalars[end].properties.isASCIIHexDigit { end += 1 }
            case "u":
                while end < scalars.count, end - start < 4, scalars[end].properties.isASCIIHexDigit { end += 1 }
            default:
                break
            }
            index = end
            return String(String.UnicodeScalarView(scalars[start..<end]))
        }
        /// A class as ICU spells it (`plain`) or, where ICU's Unicode data
        /// differs, as the set of `members` adjusted to the library's.
        func spelledClass(
            _ members: String, key: String, negated: Bool, construct: String, plain: String
        ) throws(DroptraceError) -> String {
            guard let set = try unicode.adjusted(members, key: key, construct: "regex \(quoted(pattern)) uses \(construct), which") else {
                return plain
            }
            return negated ? "[^\(set)]" : set
        }
        /// Whether a repeat (*, +, ?, or a count) starts at `position`.
        func repeatStarts(at position: Int) -> Bool {
            guard position < scalars.count else { return false }
            if ["*", "+", "?"].contains(scalars[position]) { return true }
            guard scalars[position] == "{", let close = scalars[position...].firstIndex(of: "}") else { return false }
            return RepeatCount(String(String.UnicodeScalarView(scalars[(position + 1)..<close]))) != nil
        }
        while index < scalars.count {
            let scalar = scalars[index]
            index += 1
            let inClass = !classes.isEmpty
            // Oniguruma refuses to repeat an anchor ("$*", "\\b+"); ICU repeats it.
            if !inClass, scalar == "^" || scalar == "$" || (scalar == "\\" && index < scalars.count
                && ["b", "B", "A", "z", "Z", "G"].contains(scalars[index])) {
                if repeatStarts(at: scalar == "\\" ? index + 1 : index) {
                    throw libraryRefuses("a repeated anchor (\(scalar == "\\" ? "\\\(scalars[index])" : String(scalar)))")
                }
            }
            switch scalar {
            case "\\":
                guard index < scalars.count else {
                    throw libraryRefuses("a lone backslash at its end")
                }
                let escaped = scalars[index]
                index += 1
                switch escaped {
                case "w", "W":
                    let members = inClass ? wordInBrackets : word
                    output += try spelledClass(
                        members, key: #"\w"#, negated: escaped == "W", construct: "\\\(escaped)",
                        plain: escaped == "W" ? "[^\(members)]" : inClass ? members : "[\(members)]")
                case "d", "D", "s", "S":
                    let lower = escaped.properties.lowercaseMapping
                    output += try spelledClass(
                        "\\\(lower)", key: "\\\(lower)", negated: escaped.properties.isUppercase,
                        construct: "\\\(escaped)", plain: "\\\(escaped)")
                case "b" where !inClass, "B" where !inClass:
                    // Oniguruma's word boundary: \w on one side and not on the other.
                    let word = try spelledClass(word, key: #"\w"#, negated: false, construct: "\\\(escaped)", plain: "[\(word)]")
                    output += escaped == "b"
                        ? "(?:(?<=\(word))(?!\(word))|(?<!\(word))(?=\(word)))"
                        : "(?:(?<=\(word))(?=\(word))|(?<!\(word))(?!\(word)))"
                case "h": output += inClass ? "0-9a-fA-F" : "[0-9a-fA-F]"
                case "H": output += "[^0-9a-fA-F]"
                case "v": output += #"\x{0B}"#
                case "V": output += "V"
                case "b" where inClass: output += #"\x{08}"#
                case "X", "y", "Y", "N", "O", "K", "G", "o", "g", "Q", "C", "M", "0"..."9":
                    throw refuse("\\\(escaped)")
                case "c":
                    // Oniguruma's control character: \c? is DEL, any other
                    // character c is c & 0x9F (ICU: c & 0x1F, and \c\\ differs).
                    guard index < scalars.count else { throw libraryRefuses("\"\\c\" at its end") }
                    let target = scalars[index]
                    index += 1
                    if target == "\\" { throw refuse("\\c\\") }
                    let code = target == "?" ? 0x7F : target.value & 0x9F
                    output += target.properties.isAlphabetic && target.isASCII
                        ? "\\c\(target)" : "\\x{\(String(code, radix: 16, uppercase: true))}"
                    try classValue(isSet: false, value: code)
                    continue
                case "p", "P":
                    // Without braces, \pL is the letters "pL" in Oniguruma (ICU: \p{L}).
                    guard index < scalars.count, scalars[index] == "{" else {
                        output.unicodeScalars.append(escaped)
                        try classValue(isSet: false)
                        continue
                    }
                    let braces = escapeTail(from: index)
                    guard braces.hasSuffix("}") else { throw libraryRefuses("an unclosed \\\(escaped){") }
                    let property = try PropertyNames.translated(escaped, braces, refuse: refuse, libraryRefuses: libraryRefuses)
                    let plain = "\\\(property.negated ? "P" : "p"){\(property.name)}"
                    let set = try spelledClass(
                        "\\p{\(property.name)}", key: property.key, negated: property.negated,
                        construct: "\\\(escaped)\(braces)", plain: plain)
                    // Oniguruma does not fold the case of a property outside brackets.
                    output += caseless && !inClass ? "(?-i:\(set))" : set
                    try classValue(isSet: true)
                    continue
                case "x", "u":
                    let digits = escapeTail(from: index)
                    // Oniguruma's \xHH (no braces) is one byte of the UTF-8 text: from 0x80 on,
                    // never a whole character (ICU reads it as U+0080–U+00FF).
                    if escaped == "x", !digits.hasPrefix("{"), let byte = UInt32(digits, radix: 16), byte >= 0x80 {
                        throw refuse("\\x\(digits) (a raw byte to Oniguruma, the character U+00\(digits.uppercased()) to ICU)")
                    }
                    output += "\\\(escaped)" + digits
                    try classValue(isSet: false, value: UInt32(digits.filter(\.isHexDigit), radix: 16))
                    continue
                default:
                    output += "\\\(escaped)"
                }
                try classValue(
                    isSet: ["w", "W", "h", "H", "d", "D", "s", "S"].contains(escaped), readsUnicode: !["h", "H"].contains(escaped))
            case "[" where inClass && index < scalars.count && scalars[index] == ":":
                guard let name = posixName(at: index - 1) else { throw refuse("\"[:\" that is not a POSIX bracket") }
                let bare = name.filter { $0 != "^" }
                guard PropertyNames.posix.contains(bare) else { throw libraryRefuses("the POSIX bracket [:\(name):]") }
                if ["punct", "word", "xdigit"].contains(bare) { throw refuse("[:\(name):]") }
                output += try spelledClass(
                    "[:\(bare):]", key: "[:\(bare):]", negated: name.hasPrefix("^"), construct: "[:\(name):]",
                    plain: "[:\(name):]")
                index += name.unicodeScalars.count + 3
                try classValue(isSet: true)
            case "[":
                if posixName(at: index - 1) != nil, !inClass { throw refuse("[:\(posixName(at: index - 1)!):]") }
                // Oniguruma drops the "a-" of "[a-[b]]"; ICU keeps it.
                if classes.last == .range { throw refuse("a range ending in brackets") }
                classes.append(.start)
                output += "["
                // A "]" first in brackets (after any "^") is a literal in both engines.
                if index < scalars.count, scalars[index] == "^" { output += "^"; index += 1 }
                if index < scalars.count, scalars[index] == "]" {
                    output += "]"
                    index += 1
                    try classValue(isSet: false)
                }
            case "]" where inClass:
                classes.removeLast()
                if !classes.isEmpty { classes[classes.count - 1] = .complete }
                output += "]"
            case "-" where inClass:
                // Oniguruma's reading of "-" (prs_cc): a range between two
                // characters; a literal at the start, after a range, and
                // before "]" or "&&"; an error after a class such as \d.
                // A literal is written escaped, as ICU has other rules.
                let next = index < scalars.count ? scalars[index] : "]"
                let endsOperand = next == "]" || (next == "&" && index + 1 < scalars.count && scalars[index + 1] == "&")
                switch classes.last! {
                case .character where !endsOperand:
                    output += "-"
                    classes[classes.count - 1] = .range
                case .set where !endsOperand:
                    throw libraryRefuses("a range starting at a character class")
                case .range:
                    output += "\\-"
                    classes[classes.count - 1] = .complete
                default:
                    output += "\\-"
                    classes[classes.count - 1] = .character
                }
            case "&" where inClass && index < scalars.count && scalars[index] == "&":
                index += 1
                output += "&&"
                classes[classes.count - 1] = .start
            case "&" where inClass, "$" where inClass, "{" where inClass, "}" where inClass:
                // Literals in Oniguruma's brackets; ICU gives them meaning in a set.
                output += "\\\(scalar)"
                try classValue(isSet: false, value: scalar.value)
            case "." where !inClass:
                output += #"[^\n]"#
            case "(" where !inClass:
                // Inline options: (?i:...) within its group; "-" turns off.
                // In Oniguruma's Ruby syntax "(?i)" opens a group to the end
                // of the enclosing one, alternatives included ("a(?i)b|c" is
                // "a(?i:b|c)"; in ICU it is "a(?i)b" or "c"), and is spelled so.
                let options = index < scalars.count && scalars[index] == "?"
                    ? scalars[(index + 1)...].prefix { $0.properties.isAlphabetic || $0 == "-" } : []
                let after = index + 1 + options.count
                guard index < scalars.count, scalars[index] == "?", after < scalars.count,
                      scalars[after] == ":" || scalars[after] == ")" else {
                    enclosing.append((caseless, optionGroups))
                    optionGroups = 0
                    output += "("
                    break
                }
                if let other = options.first(where: { $0 != "i" && $0 != "-" }) {
                    throw refuse("the option (?\(other))")
                }
                if scalars[after] == ":" {
                    enclosing.append((caseless, optionGroups))
                    optionGroups = 0
                } else {
                    optionGroups += 1
                }
                if let i = options.lastIndex(of: "i") { caseless = !options[..<i].contains("-") }
                output += "(?" + String(String.UnicodeScalarView(options)) + ":"
                index = after + 1
            case ")" where !inClass:
                output += String(repeating: ")", count: optionGroups + 1)
                (caseless, optionGroups) = enclosing.popLast() ?? (caseless, 0)
            case "{" where !inClass:
                // Oniguruma's Ruby syntax reads a count as {n}, {n,}, {n,m}
                // or {,m} (from 0), and a "{" that starts none of them as
                // itself ("a{b}", "a{,}"; ICU refuses them); {n,m} with n > m
                // is the possessive {m,n}+.
                guard let close = scalars[index...].firstIndex(of: "}"),
                      let count = RepeatCount(String(String.UnicodeScalarView(scalars[index..<close]))) else {
                    output += "\\{"
                    try classValue(isSet: false, value: scalar.value)
                    break
                }
                output += count.icuSpelling
                index = close + 1
                // A "+" after a count repeats the counted group again ("a{2}+"
                // is (?:a{2})+) and a "?" after an exact count makes it
                // optional; ICU reads both as possessive or lazy forms of the
                // count (and refuses any repeat after a possessive one).
                if index < scalars.count,
                   scalars[index] == "+" || (scalars[index] == "?" && (count.exact || count.possessive))
                    || (count.possessive && repeatStarts(at: index)) {
                    throw refuse("a repeat count followed by \"\(scalars[index])\" (a second repeat in Oniguruma)")
                }
            case "}" where !inClass:
                // Not the end of a count (a count takes its own "}"): itself.
                output += "\\}"
                try classValue(isSet: false, value: scalar.value)
            default:
                output.unicodeScalars.append(scalar)
                try classValue(isSet: false, value: scalar.value)
            }
        }
        output += String(repeating: ")", count: optionGroups)
        return ICUTranslation(pattern: output, checksCaseMapping: checksCaseMapping)
    }

    /// Reports matches as Oniguruma's `find_iter` does: an empty match right
    /// where the previous match ended is skipped (ICU reports it, so `a*` on
    /// "aab" would give "aa", "" and "b" instead of "aa" and "b").
    ///
    /// - Throws: `DroptraceError` naming `source` and the pattern when the
    ///   search goes over its step budget or ICU's backtracking stack.
    func forEachSegment(in text: UnsafeBufferPointer<UInt8>, _ body: (Int, Int, Bool) throws -> Void) throws {
        if checksCaseMapping, let value = ICUCharacterClasses.firstCaseMappingChange(in: text) {
            throw DroptraceError(
                "tokenizer regex \(quoted(pattern)) folds case under (?i) and the text holds U+\(String(value, radix: 16, uppercase: true)), "
                    + "a character whose case partners differ between the tokenizers library's Unicode "
                    + "\(RegexUnicodeTables.libraryUnicodeVersion) and ICU's; droptrace cannot give the library's ids for it",
                path: source)
        }
        var gapStart = 0
        var previousEnd: Int?
        let status = try regex.forEachMatch(in: text, budget: Self.budget) { start, end in
            if start == end && previousEnd == start { return }
            previousEnd = end
            if gapStart < start { try body(gapStart, start, false) }
            try body(start, end, true)
            gapStart = end
        }
        switch status {
        case DROPTRACE_REGEX_DONE:
            break
        case DROPTRACE_REGEX_OVER_BUDGET:
            throw DroptraceError(
                "tokenizer regex \(quoted(pattern)) backtracks without end on this text (over its step budget)",
                path: source)
        case DROPTRACE_REGEX_STACK_FULL:
            throw DroptraceError(
                "tokenizer regex \(quoted(pattern)) needs more backtracking memory than ICU allows on this text",
                path: source)
        default:
            throw DroptraceError(
                "tokenizer regex \(quoted(pattern)) cannot be run on a text of \(text.count) bytes", path: source)
        }
        if gapStart < text.count { try body(gapStart, text.count, false) }
    }
}

/// A compiled ICU pattern shared by threads: each search takes an idle copy
/// (ICU keeps match state in the regex object) and puts it back after.
final class CompiledICURegex: @unchecked Sendable {
    private let template: OpaquePointer
    private let lock = NSLock()
    private var idle: [OpaquePointer] = []

    /// `failure` turns ICU's reason (an error name such as
    /// U_REGEX_RULE_SYNTAX) into the error thrown.
    init(_ pattern: String, failure: (String) -> DroptraceError) throws(DroptraceError) {
        var reason = [CChar](repeating: 0, count: 64)
        let bytes = Array(pattern.utf8)
        guard bytes.count < Int(Int32.max),
              let compiled = droptrace_regex_open(bytes, Int32(bytes.count), &reason, Int32(reason.count))
        else {
            throw failure(String(decoding: reason.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        template = compiled
    }

    deinit {
        idle.forEach { droptrace_regex_close($0) }
        droptrace_regex_close(template)
    }

    /// Calls `body(start, end)` (UTF-8 offsets) for each match in `text`;
    /// returns how the search ended. An error thrown by `body` stops the
    /// search and is rethrown.
    func forEachMatch(
        in text: UnsafeBufferPointer<UInt8>, budget: droptrace_regex_budget, _ body: (Int, Int) throws -> Void
    ) throws -> droptrace_regex_status {
        let matcher = try checkOut()
        defer { checkIn(matcher) }
        return try withoutActuallyEscaping(body) { body in
            var sink = MatchSink(body: body)
            let status = withUnsafeMutablePointer(to: &sink) { sinkPointer in
                text.withMemoryRebound(to: CChar.self) { characters in
                    droptrace_regex_find_all(
                        matcher, characters.baseAddress, Int64(characters.count), budget,
                        { context, start, end in
                            let sink = context!.assumingMemoryBound(to: MatchSink.self)
                            do {
                                try sink.pointee.body(Int(start), Int(end))
                                return 0
                            } catch {
                                sink.pointee.error = error
                                return 1
                            }
                        }, sinkPointer)
                }
            }
            if let error = sink.error { throw error }
            return status
        }
    }

    private struct MatchSink {
        var body: (Int, Int) throws -> Void
        var error: Error?
    }

    private func checkOut() throws -> OpaquePointer {
        lock.lock()
        let reused = idle.popLast()
        lock.unlock()
        if let reused { return reused }
        guard let copy = droptrace_regex_clone(template) else {
            throw DroptraceError("out of memory for a tokenizer regex")
        }
        return copy
    }

    private func checkIn(_ matcher: OpaquePointer) {
        lock.lock()
        idle.append(matcher)
        lock.unlock()
    }
}

/// A tokenizer regex spelled for ICU.
struct ICUTranslation: Equatable {
    let pattern: String
    /// Whether the pattern folds case where characters whose case mappings
    /// differ between the engines could match (`ICUCharacterClasses`), so
    /// that text holding one must be refused.
    let checksCaseMapping: Bool
}

/// Where a bracket expression is in Oniguruma's reading (`prs_cc`): after
/// `[` or `&&`, after a character, after a class (\d, \p{..}, [:alpha:]),
/// after "a-", or after a whole range or nested brackets.
enum ClassState {
    case start, character, set, range, complete
}

/// `\p{..}` and `\P{..}` as Oniguruma reads them, spelled for ICU.
enum PropertyNames {
    /// The POSIX bracket names Oniguruma knows (`[:name:]`).
    static let posix: Set<String> = [
        "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct", "space", "upper",
        "word", "xdigit",
    ]

    /// Names Oniguruma reads as other sets than ICU: its POSIX-compatible
    /// ones (Punct adds the ASCII symbols $+<=>^`|~, Word and XDigit differ).
    static let differing: Set<String> = ["punct", "word", "xdigit"]

    /// A property as ICU names it (`name`, for `\p{name}`), its
    /// `RegexUnicodeTables` key and whether the construct negates it.
    struct Translation {
        let name: String
        let key: String
        let negated: Bool
    }

    /// `braces` is "{name}" or "{^name}" after `\p` or `\P` (`escaped`).
    /// Oniguruma compares names without case, spaces, hyphens and
    /// underscores, and refuses any other character and unknown names; "in"
    /// and a block name is that block.
    static func translated(
        _ escaped: Unicode.Scalar, _ braces: String, refuse: (String) -> DroptraceError,
        libraryRefuses: (String) -> DroptraceError
    ) throws(DroptraceError) -> Translation {
        var inner = Substring(braces.dropFirst().dropLast())
        var negated = escaped == "P"
        if inner.first == "^" {
            negated.toggle()
            inner = inner.dropFirst()
        }
        let construct = "\\\(escaped)\(braces)"
        guard inner.unicodeScalars.allSatisfy({ $0.properties.isASCIIHexDigit || ($0.isASCII && ($0.properties.isAlphabetic || $0.properties.numericType != nil || " -_".unicodeScalars.contains($0))) }) else {
            throw libraryRefuses("the property \(construct), a name Oniguruma does not know")
        }
        let name = String(inner.lowercased().filter { $0 != " " && $0 != "-" && $0 != "_" })
        guard OnigurumaPropertyNames.all.contains(name) else {
            throw libraryRefuses("the property \(construct), a name Oniguruma does not know")
        }
        if differing.contains(name) { throw refuse(construct) }
        // ICU reads the other names loosely as Oniguruma does, so they keep their spelling.
        let icuName = name.hasPrefix("in") && blockOnly(name) ? "Block=\(name.dropFirst(2))" : String(inner)
        return Translation(name: icuName, key: name, negated: negated)
    }

    /// Whether an "in…" name is a block rather than a property that
    /// happens to start with "in" (inherited, inscriptionalpahlavi, …).
    static func blockOnly(_ name: String) -> Bool {
        !["incb", "inherited", "initialpunctuation", "inscriptionalpahlavi", "inscriptionalparthian"].contains(name)
    }
}

/// The characters whose full case folding is several characters (ß to
/// "ss", ﬅ to "st", ...), from Unicode's CaseFolding.txt.
enum MultipleCaseFolding {
    static let ranges: [ClosedRange<UInt32>] = [
        0xDF...0xDF, 0x130...0x130, 0x149...0x149, 0x1F0...0x1F0, 0x390...0x390, 0x3B0...0x3B0, 0x587...0x587,
        0x1E96...0x1E9A, 0x1E9E...0x1E9E, 0x1F50...0x1F50, 0x1F52...0x1F52, 0x1F54...0x1F54, 0x1F56...0x1F56,
        0x1F80...0x1FAF, 0x1FB2...0x1FB4, 0x1FB6...0x1FB7, 0x1FBC...0x1FBC, 0x1FC2...0x1FC4, 0x1FC6...0x1FC7,
        0x1FCC...0x1FCC, 0x1FD2...0x1FD3, 0x1FD6...0x1FD7, 0x1FE2...0x1FE4, 0x1FE6...0x1FE7, 0x1FF2...0x1FF4,
        0x1FF6...0x1FF7, 0x1FFC...0x1FFC, 0xFB00...0xFB06, 0xFB13...0xFB17,
    ]
}

/// A repeat count as Oniguruma's Ruby syntax reads the text between "{" and
/// "}": `n`, `n,`, `n,m` or `,m` (from 0); nil for anything else, which
/// makes the "{" a literal. `n > m` is the possessive count {m,n}+.
struct RepeatCount {
    let low: Int
    /// nil: no upper bound.
    let high: Int?
    let possessive: Bool
    /// `{n}` (no comma): a "?" after it makes the count optional in Oniguruma.
    let exact: Bool

    init?(_ inside: String) {
        let parts = inside.split(separator: ",", omittingEmptySubsequences: false)
        guard parts.count <= 2, parts.allSatisfy({ $0.allSatisfy { ("0"..."9").contains($0) } }) else { return nil }
        let low = Int(parts[0]), high = parts.count == 2 ? Int(parts[1]) : low
        guard low != nil || high != nil else { return nil }
        exact = parts.count == 1
        if let low, let high, low > high {
            (self.low, self.high, possessive) = (high, low, true)
        } else {
            (self.low, self.high, possessive) = (low ?? 0, high, false)
        }
    }

    /// The count in ICU's syntax.
    var icuSpelling: String {
        let range = exact ? "{\(low)}" : "{\(low),\(high.map(String.init) ?? "")}"
        return possessive ? range + "+" : range
    }
}
