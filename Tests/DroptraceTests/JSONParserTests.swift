import DroptraceSupport
import Foundation
import Testing

/// The one JSON reader of safetensors headers, tokenizer.json, calibration
/// JSONL and config.json checks: strict JSON, as serde_json and Python's
/// json read it, each refusal with its byte offset.
@Suite struct JSONParserTests {
    @Test(arguments: [
        ("[05]", 1, "leading zero"), ("[00]", 1, "leading zero"), ("{\"a\": -012}", 7, "leading zero"),
        ("\u{FEFF}{}", 0, "unexpected character"),
    ])
    func notJSONIsRefusedAtItsByte(text: String, offset: Int, reason: String) {
        let error = #expect(throws: JSONValue.Malformed.self) { try JSONValue.parse(Array(text.utf8)) }
        #expect(error?.reason.contains(reason) == true && error?.offset == offset, "\(text): \(String(describing: error))")
    }

    /// Python's json writes and reads NaN, Infinity and -Infinity; only
    /// readers of Python tools' own files (trainer_state.json) accept them.
    @Test func pythonsNonFiniteNumbersOnlyWhenAsked() throws {
        let bytes = Array(#"[NaN, Infinity, -Infinity, -1]"#.utf8)
        #expect(throws: JSONParser.Failure.self) { try JSONParser.parse(bytes) }
        let values = try #require(try JSONParser.parse(bytes, allowingNonFinite: true) as? [Any])
        let numbers = values.compactMap { $0 as? Double }
        #expect(numbers.count == 3 && numbers[0].isNaN && numbers[1] == .infinity && numbers[2] == -.infinity)
        #expect(values[3] as? Int == -1)
        #expect(throws: JSONParser.Failure.self) { try JSONParser.parse(Array("[Nan]".utf8), allowingNonFinite: true) }
    }

    @Test func invalidUTF8InAStringIsRefused() {
        for bytes in [[0x22, 0xFF, 0x22], [0x22, 0x61, 0x5C, 0x6E, 0xC3, 0x22]] as [[UInt8]] {
            let error = #expect(throws: JSONValue.Malformed.self) { try JSONValue.parse(bytes) }
            #expect(error?.reason.contains("invalid UTF-8") == true, "\(bytes): \(String(describing: error))")
        }
    }

    @Test func validNumbersAndStringsStillParse() throws {
        let value = try JSONValue.parse(Array(#"{"a": [0, -0, 10, 0.5, 1e2, "é\n"]}"#.utf8))
        guard case .array(let items) = value.member("a") else { Issue.record("not an array"); return }
        #expect(items.count == 6)
        if case .integer(let ten) = items[2] { #expect(ten == 10) } else { Issue.record("10 is not an integer") }
        if case .string(let text) = items[5] { #expect(text == "é\n") } else { Issue.record("not a string") }
    }

    /// Files Rust's serde_json reads (safetensors headers, tokenizer.json):
    /// a lone surrogate escape is an error, and -0 is the float -0.0, where
    /// Python's json (config.json) keeps the first and reads 0 for the second.
    @Test func serdeRefusesLoneSurrogatesAndReadsMinusZeroAsAFloat() throws {
        for text in [#""\ud800""#, #""\udc00""#, #""a\ud800b""#, #""\ud800\u0041""#] {
            let error = #expect(throws: JSONParser.Failure.self) { try JSONParser.parse(Array(text.utf8), serde: true) }
            #expect(error?.reason.contains("lone surrogate") == true, "\(text): \(String(describing: error))")
            #expect(try JSONParser.parse(Array(text.utf8)) as? String != nil)
        }
        #expect(try JSONParser.parse(Array(#""\ud83d\ude00""#.utf8), serde: true) as? String == "\u{1F600}")
        let minusZero = try JSONParser.parse(Array("-0".utf8), serde: true)
        #expect(type(of: minusZero) == Double.self && (minusZero as? Double)?.sign == .minus)
        #expect(try JSONParser.parse(Array("-0".utf8)) as? Int == 0)
        #expect(try JSONParser.parse(Array("0".utf8), serde: true) as? Int == 0)
    }

    /// serde_json (tokenizers 0.23) refuses a number beyond float64 — "number
    /// out of range" for `1e400`, `-1e400` and a 400-digit integer — and reads
    /// `1e308`, a 30-digit integer and `1.5e-400` (as 0); Python's json reads
    /// ±inf and keeps the integer.
    @Test func serdeRefusesNumbersBeyondFloat64() throws {
        for text in ["1e400", "-1e400", String(repeating: "9", count: 400), #"{"dropout": 1e400}"#] {
            let error = #expect(throws: JSONParser.Failure.self) { try JSONParser.parse(Array(text.utf8), serde: true) }
            #expect(error?.reason == "number out of range", "\(text.prefix(20)): \(String(describing: error))")
            #expect(throws: Never.self) { try JSONParser.parse(Array(text.utf8)) }
        }
        #expect(try JSONParser.parse(Array("1e308".utf8), serde: true) as? Double == 1e308)
        #expect(try JSONParser.parse(Array("123456789012345678901234567890".utf8), serde: true) as? Double == 123456789012345678901234567890.0)
        #expect(try JSONParser.parse(Array("1.5e-400".utf8), serde: true) as? Double == 0)
    }

    /// The datasets library's two JSON readers (values checked against
    /// pyarrow 26 and datasets 5.2's ujson): pyarrow refuses a repeated key,
    /// a lone surrogate and 1e400 and takes NaN; ujson keeps a repeated key's
    /// first place and last value, drops a lone surrogate, reads NaN,
    /// Infinity and 1e400 as null and refuses integers beyond 64 bits.
    @Test func datasetsReadersFollowPyarrowAndUjson() throws {
        func value(_ text: String, _ reader: DatasetsJSONReader) throws -> JSONValue {
            try JSONValue.parse(Array(text.utf8), reader: reader)
        }
        for text in [#"{"a": 1, "a": 2}"#, #"{"a": "\ud800"}"#, #"{"a": 1e400}"#] {
            #expect(throws: JSONValue.Malformed.self, "\(text)") { try value(text, .pyarrow) }
        }
        if case .number(let nan)? = try value(#"{"a": NaN}"#, .pyarrow).member("a") { #expect(nan.isNaN) } else { Issue.record("NaN") }

        guard case .object(let members) = try value(#"{"a": 1, "b": 2, "a": 3}"#, .ujson) else { Issue.record("not an object"); return }
        #expect(members.map(\.key) == ["a", "b"])
        if case .integer(3) = members[0].value {} else { Issue.record("the repeated key does not hold its last value") }
        if case .string(let text)? = try value(#"{"a": "x\ud800y"}"#, .ujson).member("a") { #expect(text == "xy") } else { Issue.record("string") }
        for text in [#"{"a": NaN}"#, #"{"a": -Infinity}"#, #"{"a": 1e400}"#] {
            if case .null? = try value(text, .ujson).member("a") {} else { Issue.record("\(text) is not null") }
        }
        if case .bigInteger? = try value(#"{"a": 18446744073709551615}"#, .ujson).member("a") {} else { Issue.record("2^64 - 1") }
        for text in [#"{"a": 18446744073709551616}"#, #"{"a": -9223372036854775809}"#] {
            #expect(throws: JSONValue.Malformed.self, "\(text)") { try value(text, .ujson) }
        }
    }
}
