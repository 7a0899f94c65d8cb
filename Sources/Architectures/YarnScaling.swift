import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// YaRN's keys of `rope_parameters` / `rope_scaling` besides `factor` and
/// `original_max_position_embeddings` (transformers' `_compute_yarn_parameters`).
public struct YarnParameters: Sendable, Equatable {
    /// Multiplies cos and sin; when absent it follows from factor and the mscales.
    public var attentionFactor: Double?
    /// Rotations bounding the frequencies kept (default 32) and interpolated (default 1).
    public var betaFast: Double?
    public var betaSlow: Double?
    /// DeepSeek's: attention factor = mscale(factor, mscale) / mscale(factor, mscale_all_dim),
    /// and the softmax scale grows by mscale(factor, mscale_all_dim)² (`softmaxScale`).
    public var mscale: Double?
    public var mscaleAllDim: Double?
    /// Whether the correction range is rounded outwards to whole dimensions.
    public var truncate = true

    /// Refuses values that would divide by zero or give NaN frequencies:
    /// an attention factor or beta that is not finite and above 0, an
    /// mscale that is negative or not finite.
    func check() throws {
        try ConfigRules.positiveIfPresent(attentionFactor, "attention_factor")
        // transformers reads `beta_fast or 32`: 0 is the default.
        try ConfigRules.positiveIfPresent(betaFast == 0 ? nil : betaFast, "beta_fast")
        try ConfigRules.positiveIfPresent(betaSlow == 0 ? nil : betaSlow, "beta_slow")
        for (value, key) in [(mscale, "mscale"), (mscaleAllDim, "mscale_all_dim")] {
            if let value, !(value.isFinite && value >= 0) {
                throw InvalidConfigValue(key: key, problem: "must be a finite number of at least 0, got \(value)")
            }
        }
    }

    /// YaRN's magnitude correction 0.1 · m · ln(scale) + 1 (1 for scales up to 1).
    static func magnitude(_ scale: Double, _ m: Double = 1) -> Double { scale <= 1 ? 1 : 0.1 * m * log(scale) + 1 }
}

extension RopeSettings {
    /// The frequencies and cos/sin factor of YaRN for `rotaryDim` rotated
    /// dimensions, step for step as transformers computes them (Float32
    /// tables, Float64 correction range).
    /// - Throws: `DroptraceError` naming the config when `factor` or
    ///   `original_max_position_embeddings` is missing and cannot be
    ///   inferred from `max_position_embeddings`, or when the base and length
    ///   give no finite correction range.
    func yarnScaled(base: Double, rotaryDim dim: Int, configPath: String) throws -> ([Float], Float) {
        // The original length as standardised (see `init`); a missing factor
        // is inferred from the context extension.
        let context = try require(originalMaxPositions.map(Double.init), "original_max_position_embeddings", configPath)
        let factor = try factor ?? maxPositions.map { Double($0) / context } ?? require(nil, "factor", configPath)
        let attentionFactor: Double
        if let configured = yarn.attentionFactor {
            attentionFactor = configured
        } else if let m = yarn.mscale, let all = yarn.mscaleAllDim, m != 0, all != 0 {
            attentionFactor = YarnParameters.magnitude(factor, m) / YarnParameters.magnitude(factor, all)
        } else {
            attentionFactor = YarnParameters.magnitude(factor)
        }
        let betaFast = yarn.betaFast.flatMap { $0 == 0 ? nil : $0 } ?? 32
        let betaSlow = yarn.betaSlow.flatMap { $0 == 0 ? nil : $0 } ?? 1
        func correctionDimension(_ rotations: Double) -> Double {
            Double(dim) * log(context / (rotations * 2 * Double.pi)) / (2 * log(base))
        }
        var low = correctionDimension(betaFast), high = correctionDimension(betaSlow)
        // A base of 1 divides by log 1 = 0 (transformers raises ZeroDivisionError there).
        guard low.isFinite, high.isFinite, attentionFactor.isFinite else {
            throw DroptraceError(
                "rope type \"yarn\" with rope_theta \(base) and original_max_position_embeddings \(Int(context)) has no finite correction range",
                path: configPath)
        }
        if yarn.truncate {
            low = low.rounded(.down)
            high = high.rounded(.up)
        }
        low = max(low, 0)
        high = min(high, Double(dim - 1))
        if low == high { high += 0.001 }
        let powers = stride(from: 0, to: dim, by: 2).map { powf(Float(base), Float($0) / Float(dim)) }
        let frequencies = powers.indices.map { i -> Float in
            let extrapolated = 1 / powers[i]
            let interpolated = 1 / (Float(factor) * powers[i])
            let ramp = min(max((Float(i) - Float(low)) / Float(high - low), 0), 1)
            let keep = 1 - ramp
            return interpolated * (1 - keep) + extrapolated * keep
        }
        return (frequencies, Float(attentionFactor))
    }

    /// The magnitude correction by which DeepSeek's attention multiplies its
    /// softmax scale twice: that of `mscale_all_dim` for a scaled rope type,
    /// else 1 (transformers' `yarn_apply_mscale`).
    /// - Throws: `DroptraceError` naming the config when the factor is null
    ///   there: DeepSeek's attention reads it as given, where the rotary
    ///   table would infer it (transformers fails comparing None with 1).
    func softmaxScaleMagnitude(configPath: String) throws -> Double {
        guard type != "default", let all = yarn.mscaleAllDim, all != 0 else { return 1 }
        guard let factor else {
            throw DroptraceError(
                "the rope \"factor\" is null, but mscale_all_dim \(all) scales DeepSeek's attention by it "
                    + "(transformers fails on it): give the factor", path: configPath)
        }
        return YarnParameters.magnitude(factor, all)
    }
}
