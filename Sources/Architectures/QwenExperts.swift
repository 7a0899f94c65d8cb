import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The mixture-of-experts keys of the Qwen MoE config classes (Qwen2-MoE,
/// Qwen3-MoE, Qwen3-Next, Qwen3.5-MoE) and of Mellum's, Flint's and
/// LaraMini's, which route alike, resolved with one class's defaults,
/// and the sparse MLP they describe: on sparse layers a router `mlp.gate`
/// over `num_experts` SwiGLU experts of width `moe_intermediate_size`
/// (softmax top-`num_experts_per_tok`, renormalised when `norm_topk_prob`;
/// Flint's the top-k sigmoids, divided by their sum when `norm_topk_prob`),
/// plus, in the classes that have one, a shared SwiGLU expert
/// `mlp.shared_expert` of width `shared_expert_intermediate_size` that every
/// token goes through, its output times sigmoid(`mlp.shared_expert_gate` x)
/// (Flint's and LaraMini's ungated).
/// Other layers (`mlp_only_layers`, or off the `decoder_sparse_step` beat;
/// Mellum's marked "dense" by `mlp_layer_types`) have a dense SwiGLU MLP of
/// width `intermediate_size`. Source:
/// transformers' `Qwen2MoeSparseMoeBlock` and `Qwen2MoeDecoderLayer`.
struct QwenExperts: Sendable {
    /// What distinguishes one config class's keys: its defaults, and which
    /// of the keys it has.
    struct ConfigClass: Sendable {
        var numExperts: Int
        var numExpertsPerTok: Int
        var normTopkProb: Bool
        var moeIntermediateSize: Int
        /// nil: the class has no shared expert.
        var sharedExpertIntermediateSize: Int?
        /// Whether `num_local_experts` spells `num_experts` (Qwen3MoeConfig's and MellumConfig's attribute map).
        var readsLocalExperts = false
        /// Whether the class has `decoder_sparse_step` and `mlp_only_layers`;
        /// without them every layer is sparse (Qwen3.5-MoE, LaraMini), so
        /// `num_experts` must be at least 1: the router's top-k fails on none.
        var readsLayout = true
        /// Whether `mlp_layer_types` ("dense" / "sparse" per layer, all
        /// sparse when absent) decides the sparse layers instead of
        /// `decoder_sparse_step` and `mlp_only_layers` (MellumConfig).
        var readsMLPLayerTypes = false
        /// `mlp_only_layers` when config.json gives none or null (FlintConfig's [0, 1]).
        var mlpOnlyLayers: [Int] = []
        /// Whether the router weighs the experts by their sigmoids (FlintTopKRouter).
        var sigmoidRouter = false
        /// Whether sigmoid(`shared_expert_gate` x) scales the shared expert (not in FlintSparseMoeBlock).
        var gatedSharedExpert = true
        /// Whether the class has `norm_topk_prob`; without it the router
        /// renormalises as `normTopkProb` says (Qwen3.5-MoE's and Qwen3-VL-MoE's always).
        var readsNormTopkProb = true
        /// Whether fused experts may be stored with their last two axes
        /// swapped, as Qwen3-VL-MoE's releases store them (`Weights.expertMatrices`).
        var transposedExpertsToo = false

        /// The keys of `QwenExperts` this class has no field for.
        var unreadKeys: [String] {
            var keys: [String] = []
            if !readsNormTopkProb { keys.append("norm_topk_prob") }
            if !readsLayout || readsMLPLayerTypes { keys += ["decoder_sparse_step", "mlp_only_layers"] }
            if !readsLocalExperts { keys.append("num_local_experts") }
            if !readsMLPLayerTypes { keys.append("mlp_layer_types") }
            if sharedExpertIntermediateSize == nil { keys.append("shared_expert_intermediate_size") }
            return keys
        }

        static let qwen2Moe = ConfigClass(
            numExperts: 60, numExpertsPerTok: 4, normTopkProb: false, moeIntermediateSize: 1408, sharedExpertIntermediateSize: 5632)
        static let qwen3Moe = ConfigClass(
            numExperts: 128, numExpertsPerTok: 8, normTopkProb: false, moeIntermediateSize: 768, sharedExpertIntermediateSize: nil,
            readsLocalExperts: true)
        static let qwen3Next = ConfigClass(
            numExperts: 512, numExpertsPerTok: 10, normTopkProb: true, moeIntermediateSize: 512, sharedExpertIntermediateSize: 512)
        /// Qwen4ExpTextConfig's: Qwen3.5-MoE's layout (every layer sparse) with `norm_topk_prob`.
        static let qwen4Exp = ConfigClass(
            numExperts: 512, numExpertsPerTok: 10, normTopkProb: true, moeIntermediateSize: 512, sharedExpertIntermediateSize: 512,
            readsLayout: false)
        static let qwen3_5Moe = ConfigClass(
            numExperts: 256, numExpertsPerTok: 8, normTopkProb: true, moeIntermediateSize: 512, sharedExpertIntermediateSize: 512,
            readsLayout: false, readsNormTopkProb: false)
        static let qwen3VLMoe = ConfigClass(
            numExperts: 60, numExpertsPerTok: 4, normTopkProb: true, moeIntermediateSize: 1408, sharedExpertIntermediateSize: nil,
            readsLocalExperts: true, readsNormTopkProb: false, transposedExpertsToo: true)
        /// Qwen3OmniMoeTextConfig's: Qwen3-MoE's keys, `num_local_experts` not among them.
        static let qwen3OmniMoe = ConfigClass(
            numExperts: 128, numExpertsPerTok: 8, normTopkProb: true, moeIntermediateSize: 768, sharedExpertIntermediateSize: nil)
        static let mellum = ConfigClass(
            numExperts: 64, numExpertsPerTok: 8, normTopkProb: true, moeIntermediateSize: 896, sharedExpertIntermediateSize: nil,
            readsLocalExperts: true, readsMLPLayerTypes: true)
        static let flint = ConfigClass(
            numExperts: 256, numExpertsPerTok: 6, normTopkProb: true, moeIntermediateSize: 512, sharedExpertIntermediateSize: 1024,
            mlpOnlyLayers: [0, 1], sigmoidRouter: true, gatedSharedExpert: false)
        /// LaraMiniConfig's: every layer sparse (`LaraMiniSparseMoeBlock`,
        /// Flint's block under Qwen3-Next's softmax router), the shared expert ungated.
        static let laraMini = ConfigClass(
            numExperts: 128, numExpertsPerTok: 4, normTopkProb: true, moeIntermediateSize: 512, sharedExpertIntermediateSize: 512,
            readsLayout: false, gatedSharedExpert: false)
    }

    /// The class the keys were read with (its router and shared-expert gate).
    let configClass: ConfigClass
    /// 0 makes every MLP dense.
    var numExperts: Int
    /// The key config.json gives the expert count under, for errors.
    var numExpertsKey: String
    var numExpertsPerTok: Int
    var normTopkProb: Bool
    var moeIntermediateSize: Int
    /// The shared expert's width (0: none, as transformers adds its empty
    /// output); nil when the class has no shared expert.
    var sharedExpertIntermediateSize: Int?
    /// Every n-th layer (1-based) is sparse.
    var decoderSparseStep: Int
    /// Layers whose MLP is dense whatever `decoder_sparse_step` says.
    /// transformers asks whether a layer's index is in the list, so an
    /// entry past the last layer (left when layers were cut and the list was
    /// not) or below 0 matches no layer.
    var mlpOnlyLayers: [Int]
    /// Mellum's `mlp_layer_types`, which then decides alone (nil: not given, or not read).
    var mlpLayerTypes: [String]? = nil

    /// Whether layer `index`'s MLP is the routed experts.
    func isSparse(_ index: Int) -> Bool {
        // (Mellum refuses a list shorter than the layers before anything asks.)
        if let mlpLayerTypes { return numExperts > 0 && index < mlpLayerTypes.count && mlpLayerTypes[index] == "sparse" }
        return numExperts > 0 && !mlpOnlyLayers.contains(index) && (index + 1) % decoderSparseStep == 0
    }

    /// The sparse layers' experts under `mlp.experts.`.
    var naming: ExpertNaming { .gatedMLP(count: numExperts, countKey: numExpertsKey, isSparse: isSparse) }

    /// Refuses sizes whose expert tensors would not fit, and confirms the
    /// first kept sparse layer's router against `num_experts` × hidden_size
    /// and its experts against `moe_intermediate_size`.
    func confirm(_ parts: DecoderParts) throws {
        let d = parts.dimensions.hiddenSize, experts = self
        try parts.checks {
            // The fused expert tensors hold experts × 2 · inner × hidden values.
            try ConfigRules.product([
                (experts.numExperts, experts.numExpertsKey), (2, "gate and up"),
                (experts.moeIntermediateSize, "moe_intermediate_size"), (d, "hidden_size"),
            ])
            if let shared = experts.sharedExpertIntermediateSize {
                try ConfigRules.product([(shared, "shared_expert_intermediate_size"), (3, "gate, up and down"), (d, "hidden_size")])
            }
        }
        let sparse = (0..<parts.dimensions.numHiddenLayers).filter(isSparse)
        try parts.confirmRouter("mlp.gate", experts: numExperts, expertsKey: numExpertsKey, layers: sparse)
        try parts.confirmExpertWidth(
            layers: sparse, experts: numExperts, expertsKey: numExpertsKey, inner: moeIntermediateSize,
            transposedToo: configClass.transposedExpertsToo)
    }

    /// Layer `index`'s MLP under `layers.<index>.mlp.`: the dense SwiGLU of
    /// `intermediate_size`, or the routed experts with the gated shared expert.
    func feedForward(_ parts: DecoderParts, layer index: Int, activation: Activation) throws -> FeedForward {
        let weights = parts.weights, d = parts.dimensions.hiddenSize, p = "layers.\(index).mlp."
        guard isSparse(index) else {
            return try weights.gatedMLP(p, hidden: d, inner: parts.dimensions.intermediateSize, activation: activation)
        }
        let rule: MixtureOfExperts.RoutingRule = configClass.sigmoidRouter
            ? .groupLimited(GroupLimitedTopK(
                scoring: .sigmoid, groupScore: .best, groups: 1, groupsPerToken: 1, selectionBias: nil,
                normalizesWeights: normTopkProb, denominatorEpsilon: 0, scalingFactor: 1))
            : .softmaxTopK(renormalize: normTopkProb)
        let routed = try weights.routedExperts(
            p, count: numExperts, expertsPerToken: numExpertsPerTok, hidden: d, inner: moeIntermediateSize,
            activation: activation, rule: rule, transposedToo: configClass.transposedExpertsToo)
        guard let sharedWidth = sharedExpertIntermediateSize else { return .mixture(routed) }
        let shared = try weights.sharedExperts(
            p + "shared_expert.", hidden: d, inner: sharedWidth, activation: activation, widthKeys: "shared_expert_intermediate_size")
        guard configClass.gatedSharedExpert else {
            return .mixture(MixtureOfExperts(
                router: routed.router, experts: routed.experts, expertsPerToken: routed.expertsPerToken, rule: rule, sharedExperts: shared))
        }
        let gate = p + "shared_expert_gate"
        if shared.isEmpty, weights.has(gate + ".weight") { try weights.checkShape(gate + ".weight", [1, d]) }
        return .mixture(MixtureOfExperts(
            router: routed.router, experts: routed.experts, expertsPerToken: routed.expertsPerToken, rule: routed.rule,
            sharedExperts: shared, sharedExpertGate: shared.isEmpty ? nil : try weights.linear(gate, in: d, out: 1, bias: false)))
    }

    /// The keys as written (absent or null: nil).
    private struct Keys: Decodable {
        var numExperts: Int?
        var numLocalExperts: Int?
        var numExpertsPerTok: Int?
        var normTopkProb: Bool?
        var moeIntermediateSize: Int?
        var sharedExpertIntermediateSize: Int?
        var decoderSparseStep: Int?
        var mlpOnlyLayers: [Int]?
        var mlpLayerTypes: [String]?

        enum CodingKeys: String, CodingKey {
            case numExperts = "num_experts"
            case numLocalExperts = "num_local_experts"
            case numExpertsPerTok = "num_experts_per_tok"
            case normTopkProb = "norm_topk_prob"
            case moeIntermediateSize = "moe_intermediate_size"
            case sharedExpertIntermediateSize = "shared_expert_intermediate_size"
            case decoderSparseStep = "decoder_sparse_step"
            case mlpOnlyLayers = "mlp_only_layers"
            case mlpLayerTypes = "mlp_layer_types"
        }

        /// - Throws: `InvalidConfigValue` for a refused value.
        func resolved(_ configClass: ConfigClass) throws -> QwenExperts {
            let localExperts = configClass.readsLocalExperts ? numLocalExperts : nil
            let layout = configClass.readsLayout, byTypes = configClass.readsMLPLayerTypes
            var experts = QwenExperts(
                configClass: configClass,
                numExperts: localExperts ?? numExperts ?? configClass.numExperts,
                numExpertsKey: localExperts == nil ? "num_experts" : "num_local_experts",
                numExpertsPerTok: numExpertsPerTok ?? configClass.numExpertsPerTok,
                normTopkProb: (configClass.readsNormTopkProb ? normTopkProb : nil) ?? configClass.normTopkProb,
                moeIntermediateSize: moeIntermediateSize ?? configClass.moeIntermediateSize,
                sharedExpertIntermediateSize: configClass.sharedExpertIntermediateSize.map { sharedExpertIntermediateSize ?? $0 },
                decoderSparseStep: (layout && !byTypes ? decoderSparseStep : nil) ?? 1,
                mlpOnlyLayers: (layout && !byTypes ? mlpOnlyLayers : nil) ?? configClass.mlpOnlyLayers)
            if byTypes {
                try MLPLayerTypes.checkEntries(mlpLayerTypes)
                experts.mlpLayerTypes = mlpLayerTypes
            }
            // Both spellings name one attribute: two values would leave it to key order.
            if let numExperts, let localExperts, numExperts != localExperts {
                throw InvalidConfigValue(
                    key: "num_experts", problem: "is \(numExperts), but num_local_experts (the same setting) is \(localExperts)")
            }
            if layout {
                try ConfigRules.nonNegative(experts.numExperts, experts.numExpertsKey)
            } else {
                // Every layer routes: no expert is no model (transformers' top-k fails).
                try ConfigRules.count(experts.numExperts, experts.numExpertsKey)
            }
            // transformers takes the layer index modulo the step (0 divides by zero).
            // A negative step beats as its magnitude (Python's and Swift's remainders are 0 alike).
            if experts.decoderSparseStep == 0 {
                throw InvalidConfigValue(key: "decoder_sparse_step", problem: "is 0, by which transformers takes each layer's index modulo")
            }
            if experts.numExperts > 0 {
                try ConfigRules.count(experts.moeIntermediateSize, "moe_intermediate_size")
                if let shared = experts.sharedExpertIntermediateSize {
                    // 0: no shared expert (transformers adds its empty output).
                    try ConfigRules.nonNegative(shared, "shared_expert_intermediate_size")
                }
                try MixtureOfExperts.checkExpertsPerToken(
                    experts.numExpertsPerTok, of: experts.numExperts, expertsKey: experts.numExpertsKey)
            }
            return experts
        }
    }
}

extension QwenExperts {
    /// The keys as `configClass` reads them from `section` of config.json.
    /// - Throws: `DroptraceError` naming config.json and the key of a
    ///   refused value (a negative count, more experts per token than experts).
    init(_ checkpoint: Checkpoint, section: ConfigSection = .topLevel, configClass: ConfigClass) throws {
        // A key the class has no field for is an attribute its model never reads, whatever it holds.
        var section = section
        for key in configClass.unreadKeys { section.overrides[key] = .null }
        let keys = try checkpoint.decodeConfig(Keys.self, section: section)
        self = try ConfigRules.checks(path: checkpoint.configURL.path, section: section) { try keys.resolved(configClass) }
    }
}
