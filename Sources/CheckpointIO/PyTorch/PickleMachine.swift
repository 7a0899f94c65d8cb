import DroptraceSupport

/// Reads the pickles torch.save writes for a state dict, and nothing more.
///
/// This is not a Python unpickler: it runs the opcodes torch.load's
/// weights-only unpickler runs (protocol 2, as torch.save writes) that build
/// plain data, and treats GLOBAL/REDUCE as data too — a global must be
/// on the `TorchGlobal` allow-list, and "calling" one only records what torch
/// would rebuild (a tensor view, an empty OrderedDict). Opcodes that build
/// arbitrary objects (INST, OBJ, NEWOBJ, EXT) are refused outright.
struct PickleMachine {
    /// Turns a persistent id (BINPERSID) into a value; torch uses it for storages.
    typealias PersistentLoad = (PickleValue) throws -> PickleValue

    let bytes: [UInt8]
    let path: String
    /// Names the pickle in errors ("data.pkl", "the state-dict pickle").
    let pickleName: String

    /// Deepest nesting of lists, dicts and tuples accepted. A state dict
    /// nests a few levels; a pickle nesting thousands would overflow the
    /// stack when its values are released (each level frees the next).
    static let maximumDepth = 100

    /// Runs the pickle starting at byte `start` up to its STOP; returns the
    /// value and the position just after STOP.
    func run(from start: Int = 0, persistentLoad: PersistentLoad? = nil) throws -> (value: PickleValue, end: Int) {
        var reader = ByteReader(bytes, at: start, end: bytes.count, path: path, what: pickleName)
        var stack: [PickleValue] = []
        var marks: [Int] = []
        var memo: [Int: PickleValue] = [:]

        func fail(_ message: String) -> DroptraceError {
            DroptraceError("\(pickleName): \(message)", path: path)
        }
        func pop() throws -> PickleValue {
            guard let value = stack.popLast() else { throw fail("pickle stack underflow at byte \(reader.position - 1)") }
            return value
        }
        func popToMark() throws -> [PickleValue] {
            guard let mark = marks.popLast(), mark <= stack.count else { throw fail("pickle has no MARK at byte \(reader.position - 1)") }
            defer { stack.removeSubrange(mark...) }
            return Array(stack[mark...])
        }
        func top() throws -> PickleValue {
            guard let value = stack.last else { throw fail("pickle stack underflow at byte \(reader.position - 1)") }
            return value
        }
        func memoGet(_ index: Int) throws -> PickleValue {
            guard let value = memo[index] else { throw fail("pickle refers to memo entry \(index), which was never stored") }
            return value
        }
        func line() throws -> String {
            var characters: [UInt8] = []
            while true {
                let byte = try reader.u8()
                if byte == 0x0A { return String(decoding: characters, as: UTF8.self) }
                characters.append(byte)
                guard characters.count < 1000 else { throw fail("pickle has an overlong text argument at byte \(reader.position)") }
            }
        }
        func global(module: String, name: String) throws -> PickleValue {
            guard let allowed = TorchGlobal(module: module, name: name) else {
                throw DroptraceError(
                    "refusing to load: the pickle calls \(module.forErrorMessage).\(name.forErrorMessage), which is not part of a PyTorch state dict (nothing was executed)",
                    path: path)
            }
            return .global(allowed)
        }
        /// The nesting of a container holding `items` that was `nesting`
        /// before; marks the items' own lists and dicts as nested. Refuses a
        /// container that already sits in another one (a cycle, or a change
        /// after nesting: torch.save fills each container before using it)
        /// and nesting deeper than `maximumDepth`.
        func nest(_ items: [PickleValue], into nesting: () -> PickleNesting) throws -> PickleNesting {
            for item in items {
                switch item {
                case .list(let inner): inner.nesting.isNested = true
                case .dict(let inner): inner.nesting.isNested = true
                default: break
                }
            }
            // Read after marking: a container put into itself is nested now.
            var result = nesting()
            for item in items { result.depth = max(result.depth, Self.depth(of: item) + 1) }
            guard !result.isNested else {
                throw fail("pickle changes a list or dict after putting it inside another one (at byte \(reader.position - 1)), which a state dict never does")
            }
            guard result.depth <= Self.maximumDepth else {
                throw fail("pickle nests lists, dicts or tuples more than \(Self.maximumDepth) deep (at byte \(reader.position - 1)), which a state dict never does")
            }
            return result
        }
        func tuple(_ items: [PickleValue]) throws -> PickleValue {
            .tuple(items, depth: try nest(items) { PickleNesting() }.depth)
        }
        func setItems(_ items: [PickleValue], into target: PickleValue) throws {
            guard case .dict(let dict) = target else { throw fail("pickle sets items on \(target.kind), not a dict") }
            guard items.count % 2 == 0 else { throw fail("pickle SETITEMS has an odd number of values") }
            dict.nesting = try nest(items) { dict.nesting }
            for i in stride(from: 0, to: items.count, by: 2) { dict.entries.append((items[i], items[i + 1])) }
        }
        func append(_ items: [PickleValue], to target: PickleValue) throws {
            guard case .list(let list) = target else { throw fail("pickle appends to \(target.kind), not a list") }
            list.nesting = try nest(items) { list.nesting }
            list.items.append(contentsOf: items)
        }

        while true {
            let opcodePosition = reader.position
            let opcode = try reader.u8()
            switch opcode {
            case 0x80: // PROTO
                let version = try reader.u8()
                guard version <= 5 else { throw fail("pickle protocol \(version) is newer than any Python writes") }
            case 0x2E: // STOP
                guard stack.count == 1 else { throw fail("pickle ends with \(stack.count) values on the stack instead of one") }
                return (stack[0], reader.position)

            case 0x28: marks.append(stack.count) // MARK

            case 0x4E: stack.append(.none) // NONE
            case 0x88: stack.append(.bool(true)) // NEWTRUE
            case 0x89: stack.append(.bool(false)) // NEWFALSE
            case 0x4A: stack.append(.int(Int(Int32(bitPattern: try reader.u32())))) // BININT
            case 0x4B: stack.append(.int(Int(try reader.u8()))) // BININT1
            case 0x4D: stack.append(.int(Int(try reader.u16()))) // BININT2
            case 0x8A: stack.append(try Self.long(Array(try reader.raw(Int(try reader.u8()))))) // LONG1
            case 0x47: // BINFLOAT (big-endian)
                stack.append(.float(Double(bitPattern: try reader.u64().byteSwapped)))

            case 0x58: stack.append(.string(try reader.string(Int(try reader.u32())))) // BINUNICODE
            case 0x55: stack.append(.string(try reader.string(Int(try reader.u8())))) // SHORT_BINSTRING

            case 0x29: stack.append(.tuple([], depth: 1)) // EMPTY_TUPLE
            case 0x74: stack.append(try tuple(try popToMark())) // TUPLE
            case 0x85: stack.append(try tuple([try pop()])) // TUPLE1
            case 0x86: // TUPLE2
                let b = try pop(), a = try pop()
                stack.append(try tuple([a, b]))
            case 0x87: // TUPLE3
                let c = try pop(), b = try pop(), a = try pop()
                stack.append(try tuple([a, b, c]))
            case 0x5D: stack.append(.list(PickleList())) // EMPTY_LIST
            case 0x7D: stack.append(.dict(PickleDict())) // EMPTY_DICT
            case 0x73: // SETITEM
                let value = try pop(), key = try pop()
                try setItems([key, value], into: try top())
            case 0x75: // SETITEMS
                let items = try popToMark()
                try setItems(items, into: try top())
            case 0x61: // APPEND
                let value = try pop()
                try append([value], to: try top())
            case 0x65: // APPENDS
                let items = try popToMark()
                try append(items, to: try top())

            case 0x71: memo[Int(try reader.u8())] = try top() // BINPUT
            case 0x72: memo[Int(try reader.u32())] = try top() // LONG_BINPUT
            case 0x68: stack.append(try memoGet(Int(try reader.u8()))) // BINGET
            case 0x6A: stack.append(try memoGet(Int(try reader.u32()))) // LONG_BINGET

            case 0x63: // GLOBAL "module\nname\n"
                let module = try line()
                stack.append(try global(module: module, name: try line()))
            case 0x52: // REDUCE
                let arguments = try pop(), callable = try pop()
                guard case .tuple(let values, _) = arguments else { throw fail("pickle REDUCE arguments are \(arguments.kind), not a tuple") }
                guard case .global(let function) = callable else {
                    throw fail("pickle calls \(callable.kind), which is not part of a PyTorch state dict")
                }
                stack.append(try TorchRebuild.call(function, values, path: path, pickleName: pickleName))
            case 0x62: // BUILD: state for the object below it
                let state = try pop()
                switch try top() {
                case .dict, .tensor: break // OrderedDict._metadata, parameter state: not needed
                case let target:
                    throw fail("pickle sets the state (\(state.kind)) of \(target.kind), which a PyTorch state dict never does")
                }
            case 0x51: // BINPERSID
                let id = try pop()
                guard let persistentLoad else { throw fail("pickle refers to external data (a persistent id) where none is expected") }
                stack.append(try persistentLoad(id))

            case 0x69, 0x6F, 0x81, 0x92, 0x82, 0x83, 0x84, 0x50:
                let names: [UInt8: String] = [
                    0x69: "INST", 0x6F: "OBJ", 0x81: "NEWOBJ", 0x92: "NEWOBJ_EX", 0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4",
                    0x50: "PERSID",
                ]
                var what = ""
                if opcode == 0x69 { what = " (\(((try? line()) ?? "?").forErrorMessage).\(((try? line()) ?? "?").forErrorMessage))" }
                throw DroptraceError(
                    "refusing to load: the pickle builds an object with \(names[opcode]!)\(what) at byte \(opcodePosition), which is not part of a PyTorch state dict (nothing was executed)",
                    path: path)
            default:
                // Protocol 4 and 5 opcodes, among others, which torch.load's weights-only
                // unpickler (torch/_weights_only_unpickler.py, how transformers reads .bin
                // files) does not run: it refuses such a file ("Unsupported operand").
                let name = Self.otherOpcodes[opcode].map { " (\($0))" } ?? ""
                throw fail(
                    "pickle opcode 0x\(String(opcode, radix: 16))\(name) at byte \(opcodePosition), which torch.load with weights_only "
                        + "(as transformers loads .bin files) refuses; torch.save writes state dicts with pickle protocol 2")
            }
        }
    }

    /// Names of opcodes outside what torch's weights-only unpickler runs, for errors.
    static let otherOpcodes: [UInt8: String] = [
        0x95: "FRAME", 0x94: "MEMOIZE", 0x93: "STACK_GLOBAL", 0x8C: "SHORT_BINUNICODE", 0x8D: "BINUNICODE8",
        0x8E: "BINBYTES8", 0x42: "BINBYTES", 0x43: "SHORT_BINBYTES", 0x54: "BINSTRING", 0x8B: "LONG4",
        0x30: "POP", 0x31: "POP_MARK", 0x32: "DUP", 0x6C: "LIST", 0x64: "DICT", 0x96: "BYTEARRAY8",
        0x97: "NEXT_BUFFER", 0x98: "READONLY_BUFFER", 0x8F: "EMPTY_SET", 0x90: "ADDITEMS", 0x91: "FROZENSET",
    ]

    /// 0 for a scalar; a container's depth (1 + its deepest item's), as
    /// recorded when it was built or last changed.
    static func depth(of value: PickleValue) -> Int {
        switch value {
        case .tuple(_, let depth): depth
        case .list(let list): list.nesting.depth
        case .dict(let dict): dict.nesting.depth
        default: 0
        }
    }

    /// A little-endian two's-complement integer of any width.
    static func long(_ bytes: [UInt8]) throws -> PickleValue {
        guard !bytes.isEmpty else { return .int(0) }
        guard bytes.count <= 8 else { return .wideInt(bytes) }
        var value: UInt64 = 0
        for (i, byte) in bytes.enumerated() { value |= UInt64(byte) << (8 * UInt64(i)) }
        if bytes.count < 8, bytes.last! & 0x80 != 0 { value |= ~0 << (8 * UInt64(bytes.count)) } // sign-extend
        return .int(Int(Int64(bitPattern: value)))
    }
}
