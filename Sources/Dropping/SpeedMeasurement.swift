import Architectures
import Dispatch
import Foundation
import TensorEngine

/// What a model costs to run on droptrace's engine.
public struct SpeedReport: Sendable, Codable, Equatable {
    /// Tokens per second through the whole model, all windows in one batch.
    public var prefillTokensPerSecond: Double
    /// Median wall time of one incremental decoding step with a KV cache.
    public var decodeMillisecondsPerToken: Double
    /// Multiply-adds × 2 of one decoding step at the measured context length.
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

public enum SpeedMeasurement {
    /// Times prefill over `windows` and `decodeSteps` decoding steps, each
    /// `repeats` times, and reports medians.
    public static func measure(
        model: any LanguageModel, plan: DropPlan, windows: [[Int]], decodeSteps: Int = 32, repeats: Int = 3
    ) throws -> SpeedReport {
        let batch = TokenBatch(sequences: windows)
        let forward = LayerwiseForward(model: model, plan: plan)
        var prefill: [Double] = []
        for _ in 0..<repeats {
            let start = DispatchTime.now()
            _ = try forward.run(batch)
            prefill.append(seconds(since: start))
        }

        let steps = min(decodeSteps, model.maxPositions)
        let tokens = (0..<steps).map { windows[0][$0 % windows[0].count] }
        var perToken: [Double] = []
        var cacheBytes = 0
        for _ in 0..<repeats {
            let decoder = try IncrementalDecoder(model: model, plan: plan, capacity: steps)
            cacheBytes = decoder.cacheBytesPerToken
            for (position, token) in tokens.enumerated() {
                let start = DispatchTime.now()
                _ = try decoder.step(token: token, position: position)
                perToken.append(seconds(since: start))
            }
        }
        return SpeedReport(
            prefillTokensPerSecond: Double(batch.tokenCount) / median(prefill),
            decodeMillisecondsPerToken: 1000 * median(perToken),
            flopsPerToken: try decodeFLOPs(model: model, plan: plan, context: steps),
            kvCacheBytesPerToken: cacheBytes)
    }

    /// Analytic FLOPs of one decoding step at `context` tokens of context:
    /// 2 per weight of every kept projection, the attention over the cache,
    /// and the LM head.
    public static func decodeFLOPs(model: any LanguageModel, plan: DropPlan, context: Int) throws -> Double {
        func linear(_ l: Linear) -> Double { 2 * Double(l.inFeatures) * Double(l.outFeatures) }
        var total = linear(try model.head().projection)
        for index in 0..<model.layerCount where !plan.blocks.contains(index) {
            let block = try model.block(index, skipping: plan)
            if let attention = block.attention?.attention {
                let layout = attention.layout
                let window = attention.slidingWindow.map { min($0, context) } ?? context
                total += attention.projection.linears.reduce(linear(attention.output)) { $0 + linear($1) }
                total += 4 * Double(window) * Double(layout.numHeads * layout.headDim)
            }
            switch block.mlp?.feedForward {
            case .gated(let gateUp, let down, _)?, .clampedGated(let gateUp, let down, _)?: total += linear(gateUp) + linear(down)
            case .plain(let up, let down, _)?: total += linear(up) + linear(down)
            case .mixture(let moe)?:
                // The router, the k experts a token is sent to and the shared experts.
                func cost(_ expert: FeedForward) -> Double {
                    switch expert {
                    case .gated(let gateUp, let down, _), .clampedGated(let gateUp, let down, _): linear(gateUp) + linear(down)
                    default: 0
                    }
                }
                total += linear(moe.router) + Double(moe.expertsPerToken) * cost(moe.experts[0])
                    + moe.sharedExperts.reduce(0) { $0 + cost($1) }
            case nil: break
            }
        }
        return total
    }

    static func seconds(since start: DispatchTime) -> Double {
        Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
    }

    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }
}
