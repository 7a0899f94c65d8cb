/// Word bytes → the ids BPE produced for them, for one `encode` call.
///
/// An open-addressing table over an arena of key bytes, looked up straight
/// from the input buffer: `Dictionary<[UInt8], _>` would allocate a key
/// array and run SipHash for every word of the text.
struct WordCache {
    private struct Entry {
        var hash: UInt64
        var keyStart: Int32
        var keyLength: Int32
        var idsStart: Int32
        var idsCount: Int32
    }

    private var entries: [Entry?]
    private var mask: Int
    private var count = 0
    private var keyBytes: [UInt8] = []
    private var storedIds: [Int32] = []
    /// Bound memory on huge, varied inputs (64 MB of words, 256 MB of
    /// ids at most): the cache only saves time.
    private static let entryLimit = 1 << 20
    private static let storedLimit = 1 << 26
    /// Words longer than this are not kept: they seldom repeat, and a
    /// tokenizer without a pre-tokenizer (Llama 2's) makes a whole text one
    /// word, whose copy would only add to the memory its encoding takes.
    private static let longestKey = 1 << 10

    init() {
        entries = Array(repeating: nil, count: 1 << 12)
        mask = (1 << 12) - 1
    }

    @inline(__always)
    static func hash(_ key: UnsafeBufferPointer<UInt8>) -> UInt64 {
        var hash: UInt64 = 0x9E37_79B9_7F4A_7C15 ^ UInt64(key.count)
        var index = 0
        while index + 8 <= key.count {
            let word = UnsafeRawPointer(key.baseAddress! + index).loadUnaligned(as: UInt64.self)
            hash = (hash ^ word) &* 0xFF51_AFD7_ED55_8CCD
            hash ^= hash >> 32
            index += 8
        }
        var tail: UInt64 = 0
        var shift: UInt64 = 0
        while index < key.count {
            tail |= UInt64(key[index]) << shift
            shift += 8
            index += 1
        }
        hash = (hash ^ tail) &* 0xC4CE_B9FE_1A85_EC53
        return hash ^ (hash >> 29)
    }

    /// Appends the cached ids of `key` to `output`; false when not cached.
    func appendIds(of key: UnsafeBufferPointer<UInt8>, hash: UInt64, to output: inout [Int]) -> Bool {
        var slot = Int(truncatingIfNeeded: hash) & mask
        while let entry = entries[slot] {
            if entry.hash == hash && Int(entry.keyLength) == key.count && keyEquals(entry, key) {
                for index in Int(entry.idsStart)..<Int(entry.idsStart + entry.idsCount) {
                    output.append(Int(storedIds[index]))
                }
                return true
            }
            slot = (slot + 1) & mask
        }
        return false
    }

    private func keyEquals(_ entry: Entry, _ key: UnsafeBufferPointer<UInt8>) -> Bool {
        keyBytes.withUnsafeBufferPointer { stored in
            let start = Int(entry.keyStart)
            for index in 0..<key.count where stored[start + index] != key[index] { return false }
            return true
        }
    }

    mutating func insert(_ key: UnsafeBufferPointer<UInt8>, hash: UInt64, ids: ArraySlice<Int32>) {
        guard key.count <= Self.longestKey else { return }
        if count >= Self.entryLimit || keyBytes.count + key.count > Self.storedLimit || storedIds.count + ids.count > Self.storedLimit {
            self = WordCache()
        }
        if (count + 1) * 2 > entries.count { grow() }
        let entry = Entry(hash: hash, keyStart: Int32(keyBytes.count), keyLength: Int32(key.count),
                          idsStart: Int32(storedIds.count), idsCount: Int32(ids.count))
        keyBytes.append(contentsOf: key)
        storedIds.append(contentsOf: ids)
        place(entry)
        count += 1
    }

    private mutating func place(_ entry: Entry) {
        var slot = Int(truncatingIfNeeded: entry.hash) & mask
        while entries[slot] != nil { slot = (slot + 1) & mask }
        entries[slot] = entry
    }

    private mutating func grow() {
        let old = entries
        entries = Array(repeating: nil, count: old.count * 2)
        mask = entries.count - 1
        for case let entry? in old { place(entry) }
    }
}
