/// torch.topk's selection on CPU (`TopKImpl.h`) over (value, index) pairs
/// ordered by value, largest first (a NaN above everything), the first k
/// entries kept: libstdc++'s `std::nth_element` (introselect) for k · 64 > n,
/// else `std::partial_sort`, whose first k are those its heap selection
/// keeps. Which of several equal values are kept follows from it.
public enum TorchTopK {
    public typealias Entry = (value: Float, index: Int)

    /// torch.topk's order of values: larger first, a NaN above everything.
    @inline(__always)
    public static func ranksBefore(_ x: Float, _ y: Float) -> Bool { (x.isNaN && !y.isNaN) || x > y }

    @inline(__always)
    static func before(_ x: Entry, _ y: Entry) -> Bool { ranksBefore(x.value, y.value) }

    /// The indices torch.topk returns on CPU for the `k` largest of `count`
    /// values: those `select` keeps, largest first (the order among equal
    /// values is immaterial to callers, who sum over them). `k` is capped
    /// at `count`; none for k < 1.
    public static func indices(count: Int, k: Int, value: (Int) -> Float) -> [Int] {
        let k = min(k, count)
        guard k >= 1 else { return [] }
        var entries = (0..<count).map { (value: value($0), index: $0) }
        select(&entries, k: k)
        return entries[..<k].sorted(by: before).map(\.index)
    }

    /// The indices torch.topk returns on CPU with `sorted=True`, in its
    /// order: those `select` keeps, then ordered as its `std::partial_sort`
    /// leaves them (k · 64 ≤ n) or as `std::sort` orders all but the last
    /// (the k-th, which `std::nth_element` put in place). Equal values keep
    /// torch's order, which callers that place by position depend on
    /// (Doge's product keys). `k` is capped at `count`; none for k < 1.
    public static func sortedIndices(count: Int, k: Int, value: (Int) -> Float) -> [Int] {
        let k = min(k, count)
        guard k >= 1 else { return [] }
        var entries = (0..<count).map { (value: value($0), index: $0) }
        select(&entries, k: k)
        if k * 64 <= count {
            sortHeap(&entries, 0, k)
        } else {
            introSort(&entries, 0, k - 1)
        }
        return entries[..<k].map(\.index)
    }

    /// Reorders `entries` so that its first `k` are those torch.topk keeps:
    /// as `std::nth_element(begin, begin + k - 1, end, comp)` does, or, for
    /// k · 64 ≤ n, `std::partial_sort`'s heap selection.
    public static func select(_ entries: inout [Entry], k: Int) {
        precondition(k >= 1 && k <= entries.count)
        if k * 64 <= entries.count {
            heapSelect(&entries, 0, k, entries.count)
            return
        }
        let nth = k - 1
        var first = 0, last = entries.count
        guard nth < last else { return }
        var depth = 2 * (Int.bitWidth - 1 - last.leadingZeroBitCount)
        while last - first > 3 {
            if depth == 0 {
                heapSelect(&entries, first, nth + 1, last)
                entries.swapAt(first, nth)
                return
            }
            depth -= 1
            let cut = partitionPivot(&entries, first, last)
            if cut <= nth { first = cut } else { last = cut }
        }
        insertionSort(&entries, first, last)
    }

    /// `std::__unguarded_partition_pivot`: the median of first + 1, the middle and last − 1 moved to first, then partitioned.
    private static func partitionPivot(_ e: inout [Entry], _ first: Int, _ last: Int) -> Int {
        let mid = first + (last - first) / 2
        let (a, b, c) = (first + 1, mid, last - 1)
        if before(e[a], e[b]) {
            if before(e[b], e[c]) { e.swapAt(first, b) } else if before(e[a], e[c]) { e.swapAt(first, c) } else { e.swapAt(first, a) }
        } else if before(e[a], e[c]) {
            e.swapAt(first, a)
        } else if before(e[b], e[c]) {
            e.swapAt(first, c)
        } else {
            e.swapAt(first, b)
        }
        var low = first + 1, high = last
        while true {
            while before(e[low], e[first]) { low += 1 }
            high -= 1
            while before(e[first], e[high]) { high -= 1 }
            if !(low < high) { return low }
            e.swapAt(low, high)
            low += 1
        }
    }

    /// `std::sort`: `std::__introsort_loop` (runs over 16 partitioned,
    /// heap-sorted past 2 · log2(n) levels), then `std::__final_insertion_sort`.
    private static func introSort(_ e: inout [Entry], _ first: Int, _ last: Int) {
        guard last - first > 1 else { return }
        func loop(_ first: Int, _ last: Int, _ depth: Int) {
            var last = last, depth = depth
            while last - first > 16 {
                if depth == 0 {
                    heapSelect(&e, first, last, last)
                    sortHeap(&e, first, last)
                    return
                }
                depth -= 1
                let cut = partitionPivot(&e, first, last)
                loop(cut, last, depth)
                last = cut
            }
        }
        loop(first, last, 2 * (Int.bitWidth - 1 - (last - first).leadingZeroBitCount))
        // The unguarded insertion past the first 16 places each entry where the guarded one does.
        insertionSort(&e, first, last)
    }

    /// `std::__insertion_sort`.
    private static func insertionSort(_ e: inout [Entry], _ first: Int, _ last: Int) {
        guard last - first > 1 else { return }
        for i in (first + 1)..<last {
            let value = e[i]
            if before(value, e[first]) {
                var j = i
                while j > first { e[j] = e[j - 1]; j -= 1 }
                e[first] = value
            } else {
                var j = i
                while before(value, e[j - 1]) { e[j] = e[j - 1]; j -= 1 }
                e[j] = value
            }
        }
    }

    /// `std::__heap_select`: the heap of [first, middle) keeps the best of the rest.
    private static func heapSelect(_ e: inout [Entry], _ first: Int, _ middle: Int, _ last: Int) {
        let length = middle - first
        if length > 1 {
            var parent = (length - 2) / 2
            while true {
                adjustHeap(&e, first, parent, length, e[first + parent])
                if parent == 0 { break }
                parent -= 1
            }
        }
        for i in middle..<last where before(e[i], e[first]) {
            let value = e[i]
            e[i] = e[first]
            adjustHeap(&e, first, 0, length, value)
        }
    }

    /// `std::sort_heap` of the heap [first, last): its top popped to the end, repeatedly.
    private static func sortHeap(_ e: inout [Entry], _ first: Int, _ last: Int) {
        var last = last
        while last - first > 1 {
            last -= 1
            let value = e[last]
            e[last] = e[first]
            adjustHeap(&e, first, 0, last - first, value)
        }
    }

    /// `std::__adjust_heap` with comparator `before` (a heap whose top comes
    /// last in the order) over the `length` entries from `first`.
    private static func adjustHeap(_ e: inout [Entry], _ first: Int, _ hole: Int, _ length: Int, _ value: Entry) {
        var hole = hole
        let top = hole
        var child = hole
        while child < (length - 1) / 2 {
            child = 2 * (child + 1)
            if before(e[first + child], e[first + child - 1]) { child -= 1 }
            e[first + hole] = e[first + child]
            hole = child
        }
        if length & 1 == 0 && child == (length - 2) / 2 {
            child = 2 * (child + 1)
            e[first + hole] = e[first + child - 1]
            hole = child - 1
        }
        var parent = (hole - 1) / 2
        while hole > top && before(e[first + parent], value) {
            e[first + hole] = e[first + parent]
            hole = parent
            parent = (hole - 1) / 2
        }
        e[first + hole] = value
    }
}
