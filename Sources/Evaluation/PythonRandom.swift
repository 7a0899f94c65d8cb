import Foundation

/// CPython's `random.Random`, as far as lm-evaluation-harness's few-shot
/// sampler uses it: seeding from an integer, `getrandbits`, `_randbelow`
/// and `sample`, each the same algorithm as `Modules/_randommodule.c` and
/// `Lib/random.py` (3.9 and later), so `Random(1234).sample(docs, k)` picks
/// the documents Python picks.
public struct PythonRandom: Sendable {
    private static let stateSize = 624
    private static let shift = 397
    private var state = [UInt32](repeating: 0, count: PythonRandom.stateSize)
    private var index = PythonRandom.stateSize

    /// `random.Random(seed)` for a non-negative integer seed: all its bits,
    /// 32 at a time from the least significant, go to `init_by_array`.
    public init(seed: UInt64) {
        var key: [UInt32] = [UInt32(truncatingIfNeeded: seed)]
        if seed >> 32 != 0 { key.append(UInt32(truncatingIfNeeded: seed >> 32)) }
        initByArray(key)
    }

    private mutating func initGenrand(_ seed: UInt32) {
        state[0] = seed
        for i in 1..<Self.stateSize {
            let previous = state[i - 1]
            state[i] = 1_812_433_253 &* (previous ^ (previous >> 30)) &+ UInt32(i)
        }
        index = Self.stateSize
    }

    private mutating func initByArray(_ key: [UInt32]) {
        let n = Self.stateSize
        initGenrand(19_650_218)
        var i = 1, j = 0
        for _ in 0..<max(n, key.count) {
            let previous = state[i - 1]
            state[i] = (state[i] ^ ((previous ^ (previous >> 30)) &* 1_664_525)) &+ key[j] &+ UInt32(j)
            i += 1
            j += 1
            if i >= n { state[0] = state[n - 1]; i = 1 }
            if j >= key.count { j = 0 }
        }
        for _ in 0..<(n - 1) {
            let previous = state[i - 1]
            state[i] = (state[i] ^ ((previous ^ (previous >> 30)) &* 1_566_083_941)) &- UInt32(i)
            i += 1
            if i >= n { state[0] = state[n - 1]; i = 1 }
        }
        state[0] = 0x8000_0000
    }

    /// The next 32 bits of MT19937 (`genrand_uint32`).
    public mutating func nextUInt32() -> UInt32 {
        let n = Self.stateSize, m = Self.shift
        if index >= n {
            for k in 0..<n {
                let y = (state[k] & 0x8000_0000) | (state[(k + 1) % n] & 0x7FFF_FFFF)
                state[k] = state[(k + m) % n] ^ (y >> 1) ^ ((y & 1) == 0 ? 0 : 0x9908_B0DF)
            }
            index = 0
        }
        var y = state[index]
        index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C_5680
        y ^= (y << 15) & 0xEFC6_0000
        y ^= y >> 18
        return y
    }

    /// `getrandbits(bits)` for 0 ≤ bits ≤ 64: 32-bit words from the least
    /// significant, the last one shifted down to the bits still wanted.
    public mutating func randomBits(_ bits: Int) -> UInt64 {
        precondition((0...64).contains(bits), "randomBits takes 0...64 bits")
        if bits == 0 { return 0 }
        if bits <= 32 { return UInt64(nextUInt32() >> (32 - bits)) }
        let low = UInt64(nextUInt32())
        let high = UInt64(nextUInt32() >> (64 - bits))
        return low | high << 32
    }

    /// `_randbelow(n)` for n ≥ 1: getrandbits(n.bit_length()) until below n.
    public mutating func below(_ n: Int) -> Int {
        precondition(n >= 1, "below takes a positive bound")
        let bits = Int.bitWidth - n.leadingZeroBitCount
        var r = randomBits(bits)
        while r >= UInt64(n) { r = randomBits(bits) }
        return Int(r)
    }

    /// `sample(range(count), k)`: k distinct indices in Python's order, by the
    /// pool method when a list of `count` is smaller than a k-element set and
    /// by rejection from a set otherwise (Python's `setsize` rule).
    /// - Precondition: 0 ≤ k ≤ count (Python raises ValueError otherwise).
    public mutating func sample(count: Int, k: Int) -> [Int] {
        precondition(k >= 0 && k <= count, "sample larger than population or is negative")
        var setSize = 21
        if k > 5 {
            // 4 ** ceil(log(k * 3, 4)) with math.log's num/den division.
            let exponent = Int((log(Double(k * 3)) / log(4.0)).rounded(.up))
            setSize += 1 << (2 * exponent)
        }
        var result: [Int] = []
        result.reserveCapacity(k)
        if count <= setSize {
            var pool = Array(0..<count)
            for i in 0..<k {
                let j = below(count - i)
                result.append(pool[j])
                pool[j] = pool[count - i - 1]
            }
        } else {
            var selected = Set<Int>()
            for _ in 0..<k {
                var j = below(count)
                while selected.contains(j) { j = below(count) }
                selected.insert(j)
                result.append(j)
            }
        }
        return result
    }
}
