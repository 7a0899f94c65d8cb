import Architectures
import Dispatch
import DroptraceSupport
import Foundation
import TensorEngine

/// What one model costs at the headline length: the medians over the rounds.
public struct SpeedReport: Sendable, Codable, Equatable {
    /// Prefill throughput, batch 1: context tokens per second.
    public var prefillTokensPerSecond: Double
    /// Wall time of one incremental decoding step with a KV cache, LM head included.
    public var decodeMillisecondsPerToken: Double
    /// Multiply-adds × 2 of one decoding step at the headline's mean decoding context.
    public var flopsPerToken: Double
    /// Float32 key/value cache per token of context.
    public var kvCacheBytesPerToken: Int

    enum CodingKeys: String, CodingKey {
        case prefillTokensPerSecond = "prefill_tokens_per_second"
        case decodeMillisecondsPerToken = "decode_ms_per_token"
        case flopsPerToken = "flops_per_token"
        case kvCacheBytesPerToken = "kv_cache_bytes_per_token"
    }
}

/// Both speed metrics at one context/generate length, full vs dropped.
public struct LengthSpeed: Sendable, Codable, Equatable {
    public var context: Int
    public var generate: Int
    /// Tokens per second of the prefill.
    public var prefill: PairedSpeed
    /// Milliseconds per decoded token (each run's median step).
    public var decode: PairedSpeed

    /// The reported numbers from per-round wall times in seconds, [rounds]
    /// each: one prefill of `context` tokens and each run's median decoding step.
    public init(context: Int, generate: Int, prefillSeconds: Comparison<[Double]>, decodeSeconds: Comparison<[Double]>) {
        self.context = context
        self.generate = generate
        prefill = PairedSpeed(
            full: prefillSeconds.full.map { Double(context) / $0 }, dropped: prefillSeconds.dropped.map { Double(context) / $0 },
            higherIsBetter: true)
        decode = PairedSpeed(
            full: decodeSeconds.full.map { 1000 * $0 }, dropped: decodeSeconds.dropped.map { 1000 * $0 }, higherIsBetter: false)
    }
}

/// How `drop` times the two models.
public struct SpeedOptions: Sendable, Equatable {
    /// LLM-Drop's rounds in `src/benchmark_speed.py`: as many tokens generated as in the context.
    public static let llmDropLengths = [32, 64, 128, 256, 512]
    public var lengths = llmDropLengths
    public var policy = RoundPolicy()

    public init() {}
}

/// The full and the dropped model timed against each other, as `drop` reports it.
public struct SpeedComparison: Sendable, Encodable {
    /// Headline medians of each model (the longest length timed).
    public var full: SpeedReport
    public var dropped: SpeedReport
    /// Every length timed, shortest first; the last is the headline.
    public var lengths: [LengthSpeed]
    public var rounds: Int
    public var stopped: SpeedStop
    /// Wall time of the whole measurement, warm-up included.
    public var seconds: Double
    public var threads: Int
    public var precision: Precision
    public var matrixKernel: String

    public var headline: LengthSpeed { lengths[lengths.count - 1] }
    /// Analytic FLOPs per decoded token, dropped / full.
    public var flopsRatio: Double { dropped.flopsPerToken / full.flopsPerToken }
    /// Measured decoding time per token, dropped / full (from the median paired speed-up).
    public var decodeTimeRatio: Double { 100 / (100 + headline.decode.speedupPercent.median) }

    enum CodingKeys: String, CodingKey {
        case full, dropped, lengths, rounds, stopped, seconds, threads, precision, batch, context, generate, prefill, decode
        case matrixKernel = "matrix_kernel"
        case flopsRatio = "flops_ratio"
        case decodeTimeRatio = "decode_time_ratio"
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(full, forKey: .full)
        try container.encode(dropped, forKey: .dropped)
        try container.encode(1, forKey: .batch)
        try container.encode(headline.context, forKey: .context)
        try container.encode(headline.generate, forKey: .generate)
        try container.encode(headline.prefill, forKey: .prefill)
        try container.encode(headline.decode, forKey: .decode)
        try container.encode(lengths, forKey: .lengths)
        try container.encode(rounds, forKey: .rounds)
        try container.encode(stopped, forKey: .stopped)
        try container.encode(seconds, forKey: .seconds)
        try container.encode(threads, forKey: .threads)
        try container.encode(precision, forKey: .precision)
        try container.encode(matrixKernel, forKey: .matrixKernel)
        try container.encode(flopsRatio, forKey: .flopsRatio)
        try container.encode(decodeTimeRatio, forKey: .decodeTimeRatio)
    }
}

public enum SpeedMeasurement {
    /// Times the full model and the model without `plan`'s modules as
    /// LLM-Drop's speed benchmark does (batch 1; per length L, a prefill of L
    /// context tokens and L − 1 greedy decoding steps with a KV cache), on
    /// the engine's threads and precision. Each round times both models at
    /// every length, in counterbalanced order; rounds repeat until
    /// `options.policy` stops them. `tokens` (non-empty, valid IDs) are
    /// repeated to fill the context.
    ///
    /// Lengths need 2L − 1 ≤ the model's positions (L context tokens and
    /// L − 1 steps; a model with fewer than the shortest length's gets one
    /// length of about half its positions), and are kept while their
    /// warm-up run, times the minimum rounds, fits the budget.
    /// Throws if the model has fewer than 3 positions (a context of 2 and
    /// one decoding step).
    public static func compare(
        model: any LanguageModel, plan: DropPlan, tokens: [Int], options: SpeedOptions = SpeedOptions()
    ) throws -> SpeedComparison {
        let start = DispatchTime.now()
        let positions = model.maxPositions
        guard positions >= 3 else {
            throw DroptraceError(
                "timing decoding needs a context of at least 2 tokens and one decoding step (3 positions); the model has \(positions)",
                path: model.checkpoint.directory.path)
        }
        guard !tokens.isEmpty else { throw DroptraceError("no tokens to time the models with", path: model.checkpoint.directory.path) }
        var lengths = options.lengths.filter { $0 >= 2 && 2 * $0 - 1 <= positions }
        if lengths.isEmpty { lengths = [(positions + 1) / 2] }
        let capacity = 2 * lengths.max()! - 1
        let full = try IncrementalDecoder(model: model, plan: .none, capacity: capacity)
        let dropped = try full.dropping(plan, capacity: capacity)
        let head = try model.head()
        let context = (0..<capacity).map { tokens[$0 % tokens.count] }
        // Row i: the embedding of token i at position i (the same for both models).
        let embeddings = try lengths.map { try full.embedded(Array(context.prefix(2 * $0 - 1))) }

        /// One generation: seconds of the prefill and of the median decoding
        /// step. Each step computes the logits and their greedy choice, as
        /// LLM-Drop's does, but is fed the text's next token, whose embedding
        /// was looked up before the clock started (`IncrementalDecoder.embedded`).
        func generate(_ decoder: IncrementalDecoder, lengthIndex: Int) -> (prefill: Double, decode: Double) {
            decoder.reset()
            let length = lengths[lengthIndex], embedded = embeddings[lengthIndex]
            let prompt = embedded.rows(0..<length)
            let steps = (length..<(2 * length - 1)).map { embedded.rows($0..<$0 + 1) }
            var clock = DispatchTime.now()
            var chosen = greedy(head.logits(decoder.prefill(embedded: prompt)))
            let prefill = seconds(since: clock)
            var durations: [Double] = []
            for (offset, input) in steps.enumerated() {
                clock = DispatchTime.now()
                chosen &+= greedy(head.logits(decoder.step(embedded: input, position: length + offset)))
                durations.append(seconds(since: clock))
            }
            _ = chosen
            return (prefill, Spread(durations).median)
        }

        // Warm-up (LLM-Drop warms up before each round): pages the weights in,
        // and its cost decides which lengths fit the budget.
        let policy = options.policy
        var timed: [Int] = []
        for (index, length) in lengths.enumerated() {
            _ = generate(full, lengthIndex: index)
            _ = generate(dropped, lengthIndex: index)
            if !timed.isEmpty && seconds(since: start) * Double(policy.minRounds) > policy.budgetSeconds { break }
            timed.append(length)
        }

        // samples[length][metric]: prefill full, prefill dropped, decode full, decode dropped; one value per round.
        var samples = [[[Double]]](repeating: [[], [], [], []], count: timed.count)
        let stop: SpeedStop
        var round = 0
        while true {
            let roundStart = DispatchTime.now()
            for index in timed.indices {
                let fullFirst = (round + index) % 2 == 0
                let first = generate(fullFirst ? full : dropped, lengthIndex: index)
                let second = generate(fullFirst ? dropped : full, lengthIndex: index)
                let (f, d) = fullFirst ? (first, second) : (second, first)
                for (metric, value) in [f.prefill, d.prefill, f.decode, d.decode].enumerated() { samples[index][metric].append(value) }
            }
            round += 1
            if let reason = policy.stop(series: samples[timed.count - 1], elapsed: seconds(since: start), lastRound: seconds(since: roundStart)) {
                stop = reason
                break
            }
        }

        let measured = zip(timed, samples).map { length, series in
            LengthSpeed(
                context: length, generate: length, prefillSeconds: Comparison(full: series[0], dropped: series[1]),
                decodeSeconds: Comparison(full: series[2], dropped: series[3]))
        }
        let headline = measured[measured.count - 1]
        let flopsContext = headline.context + headline.generate / 2
        func report(_ plan: DropPlan, _ decoder: IncrementalDecoder, _ prefill: Spread, _ decode: Spread) throws -> SpeedReport {
            SpeedReport(
                prefillTokensPerSecond: prefill.median, decodeMillisecondsPerToken: decode.median,
                flopsPerToken: try decodeFLOPs(model: model, plan: plan, context: flopsContext),
                kvCacheBytesPerToken: decoder.cacheBytesPerToken)
        }
        return SpeedComparison(
            full: try report(DropPlan.none, full, headline.prefill.full, headline.decode.full),
            dropped: try report(plan, dropped, headline.prefill.dropped, headline.decode.dropped),
            lengths: measured, rounds: round, stopped: stop, seconds: seconds(since: start),
            threads: EngineThreads.count, precision: EnginePrecision.current,
            matrixKernel: MatrixKernels.description(for: EnginePrecision.current))
    }

    /// The most likely next token of a [1, vocabulary] logits row (the greedy
    /// choice LLM-Drop's generation makes each step).
    static func greedy(_ logits: Matrix) -> Int {
        var best = 0
        for (index, value) in logits.data.enumerated() where value > logits.data[best] { best = index }
        return best
    }

    /// Analytic FLOPs of one decoding step at `context` tokens of context:
    /// 2 per weight of every kept projection, the attention over the cache,
    /// and the LM head (with its `projectOut` and `predictionHead`).
    public static func decodeFLOPs(model: any LanguageModel, plan: DropPlan, context: Int) throws -> Double {
        let head = try model.head()
        var total = linear(head.projection) + (head.projectOut.map(linear) ?? 0) + (head.streamCollapse?.projections.reduce(0) { $0 + linear($1) } ?? 0)
            + (head.predictionHead.map { linear($0.dense) } ?? 0)
        // A sparse-attention indexer's projections and its scores over the context.
        func indexerFLOPs(_ attention: SelfAttention) -> Double {
            (attention.indexer.map { indexer in
                // GLM-5-Next's pools: the new key's gates, its share of its pool's softmax-weighted key
                // (about 4 per channel), and one score per complete pool instead of per key.
                let pooling = indexer.keyPools.map { linear($0.gate) + 4 * Double(indexer.dim) } ?? 0
                let scored = indexer.keyPools.map { context / $0.size } ?? context
                return linear(indexer.queryUp) + linear(indexer.key) + linear(indexer.headWeights) + pooling
                    + 2 * Double(scored * indexer.heads * indexer.dim)
            } ?? 0)
                + (attention.blockSparseIndexer.map { linear($0.query) + linear($0.key) + 2 * Double(context * $0.heads * $0.dim) } ?? 0)
                // Qwen4-Exp's QSA scores the pooled key blocks, one per `compression` keys.
                + (attention.blockIndexer.map { linear($0.projection) + 2 * Double(context / $0.compression * $0.heads * $0.dim) } ?? 0)
        }
        /// The keys a query reads: its window (a chunk, Llama 4's, bounds them
        /// as a window does), or fewer where an indexer keeps some.
        func keysRead(_ attention: SelfAttention) -> Int {
            // (In 128 bits: the counts are as configured, the context bounds them.)
            var keys = Int128(min(attention.slidingWindow ?? context, attention.chunkSize ?? context, context))
            if let indexer = attention.indexer { keys = min(keys, Int128(indexer.topK) + Int128(indexer.keyPools.map { $0.size - 1 } ?? 0)) }
            if let indexer = attention.blockSparseIndexer { keys = min(keys, Int128(indexer.topKBlocks) * Int128(indexer.blockSize)) }
            // The kept blocks and the keys after the last complete one.
            if let indexer = attention.blockIndexer { keys = min(keys, Int128(indexer.budget) + Int128(indexer.compression) - 1) }
            return Int(keys)
        }
        func attentionFLOPs(_ attention: SelfAttention) -> Double {
            let layout = attention.layout
            // Scores, then one weighted sum of the values per pass (a differential attention makes two).
            let products = attention.differential == nil ? 4.0 : 6.0
            return attention.projection.linears.reduce(linear(attention.output)) { $0 + linear($1) }
                + (attention.outputGate.map(linear) ?? 0) + products * Double(keysRead(attention)) * Double(layout.numHeads * layout.headDim)
                + indexerFLOPs(attention)
        }
        func mamba2FLOPs(_ mixer: Mamba2Mixer) -> Double {
            // The convolution's taps, then the state's decay, update and read: about 6 per state entry.
            let heads = mixer.heads
            return linear(mixer.projection) + linear(mixer.output) + 2 * Double(heads.convolutionChannels * heads.convolutionKernel)
                + 6 * Double(heads.heads * heads.headDim * heads.stateSize)
        }
        for index in 0..<model.layerCount where !plan.blocks.contains(index) {
            let block = try model.block(index, skipping: plan)
            // A looped layer (`LanguageModel.layerLoop`) runs once per pass.
            let before = total
            defer { total = before + (total - before) * Double(model.passes(of: index)) }
            switch block.attention?.mixer {
            case .attention(let attention)?:
                total += attentionFLOPs(attention)
            case .gatedDeltaNet(let net)?:
                // The state's decay, read, update and query: about 8 per state entry, whatever the context.
                let heads = net.heads
                total += linear(net.projection) + linear(net.output)
                total += 8 * Double(heads.valueHeads * heads.keyDim * heads.valueDim)
            case .mamba2(let mixer)?:
                total += mamba2FLOPs(mixer)
            case .attentionBesideMamba2(let both)?:
                total += attentionFLOPs(both.attention) + mamba2FLOPs(both.mamba)
            case .mamba(let mixer)?:
                // The taps, x_proj and dt_proj, then the state's decay, update and read: about 6 per state entry.
                let sizes = mixer.sizes
                total += linear(mixer.projection) + linear(mixer.output) + linear(mixer.selection) + linear(mixer.timeStepProjection)
                total += 2 * Double(sizes.innerWidth * sizes.convolutionKernel)
                total += 6 * Double(sizes.innerWidth * sizes.stateSize)
            case .lightningAttention(let attention)?:
                // The state's decay, update and read: about 4 per state entry, whatever the context.
                total += linear(attention.projection) + linear(attention.output)
                total += 4 * Double(attention.heads * attention.headDim * attention.headDim)
            case .compressedAttention(let attention)?:
                // The projections, then each query against its window, its compressed keys and the indexer's.
                total += linear(attention.projection) + linear(attention.queryUp) + linear(attention.output)
                total += attention.outputGroups.reduce(0) { $0 + linear($1) }
                total += 4 * Double(attention.heads * attention.headDim) * Double(min(attention.slidingWindow, context))
            case .convolvedAttention(let attention)?:
                // The projections, the two convolutions' taps, then the scores and the weighted sum over the window.
                let layout = attention.layout, window = min(attention.slidingWindow ?? context, context)
                total += linear(attention.projection) + linear(attention.output)
                total += 2 * Double(attention.channels * (attention.depthwiseKernel + layout.headDim * attention.groupedKernel))
                total += 4 * Double(window) * Double(layout.numHeads * layout.headDim)
            case .griffinRecurrent(let block)?:
                // The taps, each head's two gates, then the recurrence and the y gate: about 8 per channel.
                total += linear(block.projection) + linear(block.output) + block.inputGates.reduce(0) { $0 + 2 * linear($1) }
                total += Double(block.width * (2 * block.kernel + 8))
            case .rwkvTimeMixing(let mixing)?:
                // The three token shifts, the projections, then the WKV step: about 14 per channel.
                total += [mixing.key, mixing.value, mixing.receptance, mixing.output].reduce(0) { $0 + linear($1) }
                total += Double(9 * mixing.hidden + 14 * mixing.width)
            case .shortConvolution(let convolution)?:
                // B · x, the taps and the C gate per channel.
                total += linear(convolution.projection) + linear(convolution.output)
                total += Double(convolution.channels * (2 * convolution.kernel + 2))
            case nil:
                break
            }
            // A dropped attention whose keys and values later layers reuse still projects them;
            // one whose key selection they reuse still runs its indexer.
            if let producer = block.sharingProducer?.attention {
                total += producer.keySelectionSharing?.storesOnly == true
                    ? indexerFLOPs(producer) : producer.projection.linears.reduce(0) { $0 + linear($1) }
            }
            // Gemma 4's per-layer input: the gate and, of the gate's shape, the layer's rows of the
            // projection from the embedding; then the branch's projection.
            if let branch = block.perLayerInput {
                total += 2 * linear(branch.gate) + linear(branch.projection)
            }
            total += block.mlp.map { cost($0.feedForward) } ?? 0
            // Zamba2's hybrid layers: the shared block's MLP and the layer's linear, then the Mamba-2 mixer.
            if let tail = block.attention?.feedForward { total += cost(tail.feedForward) + (tail.projection.map(linear) ?? 0) }
            if case .mamba2(let mixer)? = block.mixerAfterAttention?.mixer { total += mamba2FLOPs(mixer) }
            // LongCat-Flash's shortcut MoE, part of its layer's MLP.
            total += block.mlp?.shortcut.map { cost($0.feedForward) } ?? 0
            // Hyper-connections: each kept branch's gate projection, its collapse and its join.
            for join in [block.attention?.join, block.mlp?.join] {
                if case .hyperConnected(let connection)? = join { total += linear(connection.projection) + 4 * Double(connection.projection.inFeatures) }
                if case .learnedAugmented(let laurel)? = join { total += linear(laurel.left) + linear(laurel.right) }
                if case .gatedResidual(let residual)? = join {
                    total += residual.projections.map(linear).reduce(0, +) + 8 * Double(residual.down.inFeatures)
                }
            }
            // AltUp: its two routings, the predictions and the corrections.
            if let altUp = block.altUp {
                total += 2 * linear(altUp.router) + linear(altUp.predictionCoefficients) + linear(altUp.correctionCoefficients)
                    + Double(2 * altUp.streams * altUp.streams * altUp.width)
            }
        }
        return total
    }

    static func linear(_ l: Linear) -> Double { 2 * Double(l.inFeatures) * Double(l.outFeatures) }

    /// Analytic FLOPs of `feedForward` on one token: its projections; of a
    /// mixture, the router, the k experts a token is sent to and the shared
    /// experts. A pick of an identity expert (LongCat-Flash's zero-computation
    /// experts) computes nothing: of the k picks, a router spreading tokens
    /// evenly over all its experts sends k · n / (n + identity) to the n that
    /// compute.
    static func cost(_ feedForward: FeedForward) -> Double {
        switch feedForward {
        case .gated(let gateUp, let down, _), .clampedGated(let gateUp, let down, _), .sparseGated(let gateUp, let down, _, _):
            linear(gateUp) + linear(down)
        case .plain(let up, let down, _): linear(up) + linear(down)
        case .mixture(let moe):
            linear(moe.router)
                + Double(moe.expertsPerToken * moe.experts.count) / Double(moe.experts.count + moe.identityExperts) * cost(moe.experts[0])
                + moe.sharedExperts.reduce(0) { $0 + cost($1) } + (moe.sharedExpertGate.map(linear) ?? 0)
        case .parallel(let parts): parts.reduce(0) { $0 + cost($1.feedForward) }
        case .hiddenNormed(let inner, _): cost(inner)
        case .productKeys(let experts):
            // The router, the dense MLP and, per chosen expert, its two rows.
            linear(experts.router) + cost(experts.shared) + Double(4 * experts.expertsPerToken * experts.router.inFeatures)
        case .rwkvChannelMixing(let mixing):
            // The two token shifts, the projections and the receptance gate.
            linear(mixing.key) + linear(mixing.receptance) + linear(mixing.value) + Double(7 * mixing.receptance.outFeatures)
        case .carriedRouter(let moe):
            // The router MLP, and the one expert a token goes to unless it picks the skip class
            // (of a router spreading tokens evenly, n / (n + 1) of them).
            moe.routerLinears.reduce(0) { $0 + linear($1) }
                + Double(moe.experts.count) / Double(moe.experts.count + 1) * cost(moe.experts[0])
        }
    }

    static func seconds(since start: DispatchTime) -> Double {
        Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
    }
}
