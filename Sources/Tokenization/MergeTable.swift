/// Pair of token ids → (rank, id of the merged token), as an open-addressing
/// hash table. Merging looks pairs up several times per byte of input, and
/// a mixing hash is several times cheaper than `Dictionary`'s SipHash here.
/// It is seeded per process, as SipHash is: with a fixed hash, a
/// tokenizer.json could list merges chosen to share one run of slots
/// (200,000 of them took 18 s to insert, each probing past the others).
struct MergeTable: Sendable {
    private static let empty = UInt64.max
    private var keys: [UInt64]
    private var values: [UInt64]
    private let shift: UInt64
    private let mask: Int

    init(capacity: Int) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        keys = Array(repeating: MergeTable.empty, count: size)
        values = Array(repeating: 0, count: size)
        mask = size - 1
        shift = UInt64(64 - size.trailingZeroBitCount)
    }

    @inline(__always)
    private static func key(_ left: Int32, _ right: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
    }

    /// Drawn once per process.
    private static let seed = UInt64.random(in: .min ... .max)

    /// MurmurHash3's 64-bit finaliser of the seeded key: every key bit moves
    /// every slot bit, so keys cannot be chosen to collide without the seed.
    @inline(__always)
    private func slot(for key: UInt64) -> Int {
        var mixed = key ^ MergeTable.seed
        mixed = (mixed ^ (mixed >> 33)) &* 0xFF51_AFD7_ED55_8CCD
        mixed = (mixed ^ (mixed >> 33)) &* 0xC4CE_B9FE_1A85_EC53
        return Int(truncatingIfNeeded: (mixed ^ (mixed >> 33)) >> shift)
    }

    /// Later duplicates win, as they do when the Rust library collects the
    /// merge list into a map.
    mutating func insert(left: Int32, right: Int32, rank: UInt32, merged: Int32) {
        let key = MergeTable.key(left, right)
        var index = slot(for: key)
        while keys[index] != MergeTable.empty && keys[index] != key { index = (index + 1) & mask }
        keys[index] = key
        values[index] = UInt64(rank) << 32 | UInt64(UInt32(bitPattern: merged))
    }

    /// The merge joining `left` and `right`, packed as rank << 32 | merged id.
    @inline(__always)
    func lookup(_ left: Int32, _ right: Int32) -> UInt64? {
        let key = MergeTable.key(left, right)
        return keys.withUnsafeBufferPointer { keys in
            var index = slot(for: key)
            while true {
                let found = keys[index]
                if found == key { return values[index] }
                if found == MergeTable.empty { return nil }
                index = (index + 1) & mask
            }
        }
    }
}
