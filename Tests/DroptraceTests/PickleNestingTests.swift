import DroptraceSupport
import Testing
@testable import CheckpointIO

/// Pickles nesting lists, dicts or tuples deeper than a state dict ever
/// does (or putting a container inside itself) are refused with one line
/// naming the file, instead of overflowing the stack when the values are
/// released (the shapes found by fuzzing: EMPTY_LIST/APPEND chains, TUPLE1
/// chains, EMPTY_DICT/SETITEM chains), spelled with the opcodes torch.load's
/// weights-only unpickler runs.
@Suite struct PickleNestingTests {
    private func run(_ opcodes: [UInt8]) throws -> PickleValue {
        try PickleMachine(bytes: [0x80, 0x02] + opcodes + [0x2E], path: "model/pytorch_model.bin", pickleName: "data.pkl")
            .run().value
    }

    private func expectRefused(_ opcodes: [UInt8], mentioning words: String) {
        let error = #expect(throws: DroptraceError.self) { try run(opcodes) }
        #expect(error?.path == "model/pytorch_model.bin")
        #expect(error?.message.contains(words) == true, "\(String(describing: error))")
    }

    @Test func deepListsAreRefused() {
        let depth = 30_000
        // N + 1 empty lists, then N APPENDs fold each into the one below.
        expectRefused([UInt8](repeating: 0x5D, count: depth + 1) + [UInt8](repeating: 0x61, count: depth), mentioning: "more than 100 deep")
    }

    @Test func deepTuplesAreRefusedAtTheLimit() throws {
        let none: [UInt8] = [0x4E]
        _ = try run(none + [UInt8](repeating: 0x85, count: PickleMachine.maximumDepth))
        expectRefused(none + [UInt8](repeating: 0x85, count: PickleMachine.maximumDepth + 1), mentioning: "more than 100 deep")
        expectRefused(none + [UInt8](repeating: 0x85, count: 100_000), mentioning: "more than 100 deep")
    }

    @Test func deepDictsAreRefused() {
        // {} then N × (key 0, {}), then N SETITEMs fold each dict into the one below.
        let depth = 100_000
        var opcodes: [UInt8] = [0x7D]
        for _ in 0..<depth { opcodes += [0x4B, 0x00, 0x7D] }
        expectRefused(opcodes + [UInt8](repeating: 0x73, count: depth), mentioning: "more than 100 deep")
    }

    @Test func tuplesSharingSubTuplesAreMeasuredOnce() throws {
        // t = None; N × (BINPUT 0, BINGET 0, TUPLE2): t = (t, t). A tree of 2^N
        // leaves in N tuples; walking it to measure each new tuple never ends.
        let none: [UInt8] = [0x4E]
        let pair: [UInt8] = [0x71, 0x00, 0x68, 0x00, 0x86]
        let value = try run(none + Array([[UInt8]](repeating: pair, count: 90).joined()))
        #expect(PickleMachine.depth(of: value) == 90)
        expectRefused(none + Array([[UInt8]](repeating: pair, count: 1000).joined()), mentioning: "more than 100 deep")
    }

    @Test func aListPutIntoItselfIsRefused() {
        expectRefused([0x5D, 0x71, 0x00, 0x68, 0x00, 0x61], mentioning: "inside another one") // EMPTY_LIST, BINPUT, BINGET, APPEND
    }

    @Test func aListChangedAfterNestingIsRefused() {
        // l1 = [] memo 0; l2 = []; l2 += [l1]; then l1 fetched again and appended to: its depth in l2 would go stale.
        expectRefused([0x5D, 0x71, 0x00, 0x5D, 0x28, 0x68, 0x00, 0x65, 0x68, 0x00, 0x4E, 0x61], mentioning: "inside another one")
    }

    @Test func stateDictShapesStillLoad() throws {
        // {'a': [1, (2, 3)]}
        let value = try run([0x7D, 0x58, 0x01, 0x00, 0x00, 0x00, 0x61, 0x5D, 0x28, 0x4B, 0x01, 0x4B, 0x02, 0x4B, 0x03, 0x86, 0x65, 0x73])
        guard case .dict(let dict) = value, case .list(let list)? = dict.value(forKey: "a") else {
            Issue.record("expected {'a': [...]}, got \(value.kind)")
            return
        }
        #expect(list.items.count == 2)
        #expect(PickleMachine.depth(of: value) == 3)
    }
}
