/// An n-gap cosine matrix [L][L] that agrees with per-layer block
/// importances as a run's does: `[i][0]` = 1 − `block[i]` (the same pair of
/// states), `farther` for longer gaps, NaN past the last layer (i + n > L).
func blockGap(agreeingWith block: [Float], farther: Float = 0.1) -> [[Float]] {
    let layers = block.count
    return (0..<layers).map { start in
        (0..<layers).map { span in span == 0 ? 1 - block[start] : start + span < layers ? farther : .nan }
    }
}
