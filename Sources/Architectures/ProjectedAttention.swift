import TensorEngine

extension DecoderParts {
    /// Layer attention stored as transformers' usual `q_proj`, `k_proj`,
    /// `v_proj` and `o_proj` under `prefix` (e.g. "layers.3.self_attn."),
    /// with the heads of `layout` (by default `attentionLayout`; q/k/v
    /// stacked into one projection, grouped q | k | v).
    ///
    /// - Parameters:
    ///   - bias: whether q/k/v_proj have biases; `outputBias` for o_proj
    ///     (the same unless given: Qwen2 has q/k/v biases only); `outputName`
    ///     for o_proj's name (Phi's `dense`).
    ///   - scale: the softmax scale, 1/√head_dim unless given.
    ///   - interleavedRotary: `rotary` turns pairs of neighbouring dimensions
    ///     (2i, 2i + 1) of each head's rotated part, as GLM, ERNIE 4.5 and
    ///     Helium rotate, not its halves (`interleavingPairs`).
    ///   - fusedQKV: a q | k | v projection's name, read where stored (`Weights.stackedQKV`).
    ///   - the rest: as `SelfAttention` takes them.
    /// - Throws: `DroptraceError` for a missing tensor or a shape the sizes contradict.
    func attention(
        _ prefix: String, bias: Bool, outputBias: Bool? = nil, outputName: String = "o_proj", rotary: RotaryEmbedding?, scale: Float? = nil,
        interleavedRotary: Bool = false, slidingWindow: Int? = nil, clip: Float? = nil, queryKeyNorm: QueryKeyNorm? = nil,
        queryKeyNormAfterRotary: Bool = false, logitSoftcap: Float? = nil, sinkLogits: [Float]? = nil,
        queryTemperature: QueryTemperature? = nil, chunkSize: Int? = nil, outputGate: Linear? = nil, layout: QKVLayout? = nil,
        fusedQKV: String? = nil
    ) throws -> SelfAttention {
        let layout = layout ?? attentionLayout, d = dimensions.hiddenSize
        var qkv = try weights.stackedQKV(prefix, hidden: d, layout: layout, bias: bias, fused: fusedQKV)
        if interleavedRotary, let rotary { qkv = Self.interleavingPairs(qkv, layout: layout, rotaryDim: rotary.rotaryDim) }
        return SelfAttention(
            qkv: qkv,
            layout: layout,
            rotary: rotary,
            output: try weights.linear(prefix + outputName, in: layout.queryWidth, out: d, bias: outputBias ?? bias),
            scale: scale ?? 1 / Float(layout.headDim).squareRoot(),
            slidingWindow: slidingWindow, clip: clip, queryKeyNorm: queryKeyNorm, queryKeyNormAfterRotary: queryKeyNormAfterRotary,
            logitSoftcap: logitSoftcap, sinkLogits: sinkLogits, queryTemperature: queryTemperature, chunkSize: chunkSize,
            outputGate: outputGate)
    }
}

extension Weights {
    /// A per-head gate `name` [heads, hidden] of `layout`'s heads widened to a
    /// gate of every attention output column: each head's row repeated
    /// head_dim times, so a column's gate is its head's (LFM3's and Laguna's
    /// per-head output gates).
    func perHeadGate(_ name: String, layout: QKVLayout, hidden d: Int) throws -> Linear {
        let rows = try linear(name, in: d, out: layout.numHeads, bias: false).weight
        let repeated = (0..<layout.numHeads).flatMap { h in
            (0..<layout.headDim).flatMap { _ in rows[(h * d)..<((h + 1) * d)] }
        }
        return Linear(weight: repeated, bias: nil, inFeatures: d, outFeatures: layout.queryWidth)
    }

    /// A gate `name` [heads · valueDim, hidden] of one row per value column,
    /// widened to the attention output of `layout` (each head `headDim`
    /// wide): zero rows for a head's padding columns, whose output is zero anyway.
    func channelGate(_ name: String, layout: QKVLayout, valueDim: Int, hidden d: Int) throws -> Linear {
        let gate = try linear(name, in: d, out: layout.numHeads * valueDim, bias: false)
        return LatentQKVProjection.paddedRows(gate, numHeads: layout.numHeads, valueDim: valueDim, headDim: layout.headDim)
    }
}

extension DecoderParts {
    /// `qkv` [q | k | v rows, hidden] with the first `rotaryDim` rows of every
    /// q and k head reordered evens first, then odds (0, 2, 4, …, 1, 3, 5, …;
    /// biases alike): the usual rotate-half rotation then turns the pairs
    /// (2i, 2i + 1) transformers' interleaved rotation turns, and the
    /// query-key products are the same sums in another order.
    static func interleavingPairs(_ qkv: Linear, layout: QKVLayout, rotaryDim: Int) -> Linear {
        let heads = (0..<layout.numHeads).map(layout.queryOffset(head:)) + (0..<layout.numKVHeads).map(layout.keyOffset(kvHead:))
        return qkv.rearrangingRows {
            LatentQKVProjection.deinterleavingRope($0, rowWidth: $1, ropeStarts: heads, ropeDim: rotaryDim)
        }
    }
}

extension Linear {
    /// The projection with output row i (weight and bias) multiplied by
    /// `factors[i]`: y_i · f_i as one product (Dory's per-channel scales,
    /// Muse Spark's input-scaled norms folded into the projection before them).
    func scalingRows(by factors: [Float]) -> Linear {
        precondition(factors.count == outFeatures && layout == .outByIn)
        var scaled = weight
        let width = inFeatures
        scaled.withUnsafeMutableBufferPointer { values in
            for row in 0..<outFeatures {
                for j in (row * width)..<((row + 1) * width) { values[j] *= factors[row] }
            }
        }
        return Linear(weight: scaled, bias: bias.map { zip($0, factors).map { $0 * $1 } }, inFeatures: inFeatures, outFeatures: outFeatures)
    }

    /// A q/k/v projection whose rows are per head ([q_h, k_h, v_h] for each
    /// head h, `headDim` rows each: GPT-NeoX's and Persimmon's
    /// `query_key_value`) with its rows grouped as q | k | v (each head's
    /// rows in order), the layout per-head q/k norms are applied in.
    func groupingHeadsByProjection(heads: Int, headDim: Int) -> Linear {
        rearrangingRows { values, width in
            let block = headDim * width
            var grouped: [Float] = []
            grouped.reserveCapacity(values.count)
            for projection in 0..<3 {
                for head in 0..<heads {
                    let start = (head * 3 + projection) * block
                    grouped += values[start..<(start + block)]
                }
            }
            return grouped
        }
    }

    /// The same [out, in] layer with its output rows moved as `rearrange`
    /// moves the rows of a row-major array of the given row width: the
    /// weights (rows `inFeatures` wide) and the bias (rows 1 wide) alike.
    func rearrangingRows(_ rearrange: (_ values: [Float], _ rowWidth: Int) -> [Float]) -> Linear {
        Linear(
            weight: rearrange(weight, inFeatures), bias: bias.map { rearrange($0, 1) },
            inFeatures: inFeatures, outFeatures: outFeatures)
    }
}
