import CICURegex
import DroptraceSupport
import Foundation

/// Any other regex from a tokenizer.json, run by ICU's regex engine with a
/// step budget, so that a pattern with catastrophic backtracking is an error
/// naming the file and the pattern instead of a hang.
///
/// The Rust library uses Oniguruma. For \p{..} classes, \s, \d, (?i:..),
/// look-ahead and alternation the two agree (checked character by character
/// against the Python package); the shorthands that differ are rewritten
/// by `translatedToICU`. `^` and `$` match at line breaks in Oniguruma's
/// default (Ruby) syntax, hence ICU's multiline mode.
struct ICURegexSplitPattern: SplitPattern {
    let pattern: String
    /// The file the pattern came from, named in errors.
    let source: String
    private let regex: CompiledICURegex

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

    /// - Throws: `DroptraceError` naming `source` when ICU cannot compile
    ///   the (translated) pattern.
    init(pattern: String, source: String) throws {
        self.pattern = pattern
        self.source = source
        regex = try CompiledICURegex(Self.translatedToICU(pattern), failure: { reason in
            DroptraceError("invalid regex \(quoted(pattern)) (\(reason))", path: source)
        })
    }

    /// Rewrites Oniguruma shorthands whose ICU meaning differs:
    /// Oniguruma's \w is ICU's without the zero-width joiners and with the
    /// superscript digits and vulgar fractions of Latin-1 (its Latin-1 table
    /// counts them as word characters), \h is a hex
    /// digit (ICU: horizontal space), and `.` excludes only \n (ICU also
    /// excludes \r, \v, \f, U+0085, U+2028, U+2029). Inside brackets the
    /// positive sets are spliced in and the negated ones nested, which ICU
    /// reads as a union.
    static func translatedToICU(_ pattern: String) -> String {
        let word = #"\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\u00B2\u00B3\u00B9\u00BC-\u00BE"#
        var output = ""
        var classDepth = 0
        var scalars = pattern.unicodeScalars.makeIterator()
        while let scalar = scalars.next() {
            switch scalar {
            case "\\":
                guard let escaped = scalars.next() else {
                    output.unicodeScalars.append(scalar)
                    break
                }
                let inClass = classDepth > 0
                switch escaped {
                case "w": output += inClass ? word : "[\(word)]"
                case "W": output += "[^\(word)]"
                case "h": output += inClass ? "0-9a-fA-F" : "[0-9a-fA-F]"
                case "H": output += "[^0-9a-fA-F]"
                default:
                    output.unicodeScalars.append(scalar)
                    output.unicodeScalars.append(escaped)
                }
            case "[":
                classDepth += 1
                output.unicodeScalars.append(scalar)
            case "]":
                classDepth = max(0, classDepth - 1)
                output.unicodeScalars.append(scalar)
            case "." where classDepth == 0:
                output += #"[^\n]"#
            default:
                output.unicodeScalars.append(scalar)
            }
        }
        return output
    }

    /// - Throws: `DroptraceError` naming `source` and the pattern when the
    ///   search goes over its step budget or ICU's backtracking stack.
    func forEachSegment(in text: UnsafeBufferPointer<UInt8>, _ body: (Int, Int, Bool) throws -> Void) throws {
        var gapStart = 0
        let status = try regex.forEachMatch(in: text, budget: Self.budget) { start, end in
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
    init(_ pattern: String, failure: (String) -> Error) throws {
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
