import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The routed-expert keys of DeepSeek-V3's config class and the classes
/// derived from it (GLM-4.5, GLM-4.7-Flash, DeepSeek-V3.2, GLM-5, Solar Open,
/// Mistral Small 4, dots.llm1, EXAONE MoE), resolved with one class's defaults, and the
/// layer they describe (`GroupRoutedMixture`): a router `mlp.gate` choosing
/// `num_experts_per_tok` of `n_routed_experts` SwiGLU experts of width
/// `moe_intermediate_size` within the best `topk_group` of `n_group` groups,
/// weights renormalised when `norm_topk_prob` and scaled by
/// `routed_scaling_factor`, plus `n_shared_experts` shared experts. Source:
/// transformers' `DeepseekV3Config` / `DeepseekV3MoE` and the derived
/// classes' configuration and modeling files.
///
/// Only a key's absence takes the class's default: a written null is None
/// in transformers (a count it cannot build from: refused when the routed
/// layers need it; a flag its `if` reads as false). The classes whose
/// fields refuse None have config.json's null refused before this is read.
struct DeepSeekExperts: Sendable {
    /// What distinguishes one config class: its defaults (nil: None), its
    /// key names and its router.
    struct ConfigClass: Sendable {
        var nRoutedExperts: Int?
        var numExpertsPerTok: Int?
        var nSharedExperts: Int?
        var moeIntermediateSize: Int
        var routedScalingFactor: Double
        var nGroup: Int? = 1
        var topkGroup: Int? = 1
        var normTopkProb = true
        /// Sigmoid scores ranked with a correction bias (DeepSeek-V3's
        /// router), or softmax scores without one (Mistral4TopkRouter).
        var scoring: GroupLimitedTopK.Scoring = .sigmoid
        /// The keys of the expert counts: `n_routed_experts`, which
        /// `num_local_experts` spells too (the attribute map of most
        /// classes), and `n_shared_experts` (nil: the class has no shared
        /// experts, MiMo-V2-Flash's; none are read).
        var expertsKey = "n_routed_experts"
        var expertsAlias: String? = "num_local_experts"
        var sharedExpertsKey: String? = "n_shared_experts"
        /// Where, under the MLP prefix, the correction bias may be stored.
        var correctionBiasNames = ["gate.e_score_correction_bias"]
        /// The key of the routed weights' scale (HYV3Config's `router_scaling_factor`).
        var scalingFactorKey = "routed_scaling_factor"
        /// The keys of the experts per token, the groups and the
        /// renormalisation (BailingHybridConfig stores them as
        /// `num_experts_per_token`, `num_expert_group`, `moe_renormalize`).
        var perTokenKey = "num_experts_per_tok"
        var groupKey = "n_group"
        var renormalizeKey = "norm_topk_prob"
        /// Each routed expert's projections when stored per expert.
        var expertNames = ExpertNaming.gatedNames
        /// Whether config.json's `n_group`, `topk_group` and `norm_topk_prob`
        /// are read; a class without them routes in one group and always
        /// renormalises (HYV3Config).
        var readsGroupKeys = true
        /// Whether null `n_group` and `topk_group` route over all experts
        /// (AXK2Config's default) rather than being refused for the routed layers.
        var ungroupedWhenNull = false
        /// `GroupLimitedTopK.excludedGroupScore` (AXK2TopkRouter's 0.0); nil:
        /// the experts outside the kept groups are excluded.
        var excludedGroupScore: Float? = nil
        /// The class's name, for errors about its None defaults.
        var name: String

        static let glm4Moe = ConfigClass(
            nRoutedExperts: 128, numExpertsPerTok: 8, nSharedExperts: 1, moeIntermediateSize: 1408, routedScalingFactor: 1,
            name: "Glm4MoeConfig")
        /// Param2MoeConfig and SarvamMoEConfig: Glm4MoeConfig's keys under their own defaults.
        static let param2Moe = ConfigClass(
            nRoutedExperts: 64, numExpertsPerTok: 6, nSharedExperts: 2, moeIntermediateSize: 2048, routedScalingFactor: 2.5,
            name: "Param2MoeConfig")
        static let sarvamMoe = ConfigClass(
            nRoutedExperts: 128, numExpertsPerTok: 6, nSharedExperts: 1, moeIntermediateSize: 1024, routedScalingFactor: 2.5,
            name: "SarvamMoEConfig")
        /// MiniCPM5MoeConfig: Glm4MoeConfig's keys under its own defaults.
        static let miniCPM5Moe = ConfigClass(
            nRoutedExperts: 160, numExpertsPerTok: 16, nSharedExperts: 1, moeIntermediateSize: 512, routedScalingFactor: 3.66,
            name: "MiniCPM5MoeConfig")
        static let glm4MoeLite = ConfigClass(
            nRoutedExperts: 64, numExpertsPerTok: 4, nSharedExperts: 1, moeIntermediateSize: 1536, routedScalingFactor: 1.8,
            name: "Glm4MoeLiteConfig")
        static let deepseekV32 = ConfigClass(
            nRoutedExperts: 256, numExpertsPerTok: 8, nSharedExperts: 1, moeIntermediateSize: 2048, routedScalingFactor: 2.5,
            nGroup: 8, topkGroup: 4, name: "DeepseekV32Config")
        static let axk1 = ConfigClass(
            nRoutedExperts: 192, numExpertsPerTok: 8, nSharedExperts: 1, moeIntermediateSize: 2048, routedScalingFactor: 2.5,
            nGroup: 8, topkGroup: 4, name: "AXK1Config")
        static let glmMoeDsa = ConfigClass(
            nRoutedExperts: 256, numExpertsPerTok: 8, nSharedExperts: 1, moeIntermediateSize: 2048, routedScalingFactor: 2.5,
            name: "GlmMoeDsaConfig")
        static let solarOpen = ConfigClass(
            nRoutedExperts: 128, numExpertsPerTok: 8, nSharedExperts: 1, moeIntermediateSize: 1280, routedScalingFactor: 1,
            name: "SolarOpenConfig")
        static let mistral4 = ConfigClass(
            nRoutedExperts: 128, numExpertsPerTok: 4, nSharedExperts: 1, moeIntermediateSize: 2048, routedScalingFactor: 1,
            scoring: .softmax, name: "Mistral4Config")
        static let mistralLarge4 = ConfigClass(
            nRoutedExperts: 128, numExpertsPerTok: 4, nSharedExperts: 1, moeIntermediateSize: 6144, routedScalingFactor: 1,
            scoring: .softmax, expertNames: (gate: "w1", up: "w3", down: "w2"), name: "MistralLarge4TextConfig")
        static let dots1 = ConfigClass(
            nRoutedExperts: nil, numExpertsPerTok: nil, nSharedExperts: nil, moeIntermediateSize: 1408, routedScalingFactor: 1,
            normTopkProb: false, name: "Dots1Config")
        /// ExaoneMoeConfig names the counts `num_experts` and `num_shared_experts`;
        /// its checkpoints may store the bias beside the router.
        static let exaoneMoe = ConfigClass(
            nRoutedExperts: 64, numExpertsPerTok: 8, nSharedExperts: 1, moeIntermediateSize: 1024, routedScalingFactor: 2.5,
            expertsKey: "num_experts", expertsAlias: nil, sharedExpertsKey: "num_shared_experts",
            correctionBiasNames: ["gate.e_score_correction_bias", "e_score_correction_bias"], name: "ExaoneMoeConfig")
        /// HYV3Config: `num_experts` (alias `num_local_experts`),
        /// `num_shared_experts`, `router_scaling_factor`, the bias beside the
        /// router; no groups, weights always renormalised.
        static let hyV3 = ConfigClass(
            nRoutedExperts: 192, numExpertsPerTok: 8, nSharedExperts: 1, moeIntermediateSize: 1536, routedScalingFactor: 2.826,
            expertsKey: "num_experts", expertsAlias: "num_local_experts", sharedExpertsKey: "num_shared_experts",
            correctionBiasNames: ["expert_bias", "e_score_correction_bias"], scalingFactorKey: "router_scaling_factor", readsGroupKeys: false,
            name: "HYV3Config")
        /// MiMoV2FlashConfig: DeepSeek-V3's router without shared experts;
        /// a null `routed_scaling_factor` is 1.
        static let mimoV2Flash = ConfigClass(
            nRoutedExperts: 256, numExpertsPerTok: 8, nSharedExperts: 0, moeIntermediateSize: 2048, routedScalingFactor: 1,
            sharedExpertsKey: nil, name: "MiMoV2FlashConfig")

        /// The class read under the keys its attribute map stores the usual
        /// ones as (BailingHybridConfig's, KimiLinearConfig's: `num_experts`,
        /// `num_experts_per_token`, `num_expert_group`, `moe_renormalize`,
        /// `num_shared_experts`); a config written with the usual names has
        /// them copied there (`ConfigValueKinds.decodable`).
        var readingStoredKeys: ConfigClass {
            var stored = self
            (stored.expertsKey, stored.expertsAlias, stored.sharedExpertsKey) = ("num_experts", nil, "num_shared_experts")
            (stored.perTokenKey, stored.groupKey, stored.renormalizeKey) = ("num_experts_per_token", "num_expert_group", "moe_renormalize")
            return stored
        }
    }

    let configClass: ConfigClass
    /// nil: None (no count to build the routed layers from).
    var nRoutedExperts: Int?
    /// The key config.json gives the expert count under, for errors.
    var nRoutedExpertsKey: String
    var numExpertsPerTok: Int?
    var nSharedExperts: Int?
    var moeIntermediateSize: Int
    var routedScalingFactor: Double
    var nGroup: Int?
    var topkGroup: Int?
    var normTopkProb: Bool


    /// The keys as `configClass` reads them from the config object `decoder` is at.
    /// - Throws: `DecodingError` for a value of the wrong kind, or for
    ///   `n_routed_experts` and its alias both written with different values.
    init(from decoder: Decoder, configClass: ConfigClass) throws {
        let c = try decoder.container(keyedBy: ConfigKey.self)
        func written<T: Decodable>(_ key: String, absent: T?) throws -> T? {
            c.contains(ConfigKey(key)) ? try c.decodeIfPresent(T.self, forKey: ConfigKey(key)) : absent
        }
        self.configClass = configClass
        let routed: Int?? = c.contains(ConfigKey(configClass.expertsKey)) ? .some(try written(configClass.expertsKey, absent: nil)) : nil
        let alias = configClass.expertsAlias.flatMap { c.contains(ConfigKey($0)) ? $0 : nil }
        let local: Int?? = try alias.map { try written($0, absent: nil) }
        nRoutedExperts = local ?? routed ?? configClass.nRoutedExperts
        nRoutedExpertsKey = alias ?? configClass.expertsKey
        numExpertsPerTok = try written(configClass.perTokenKey, absent: configClass.numExpertsPerTok)
        nSharedExperts = try configClass.sharedExpertsKey.map { try written($0, absent: configClass.nSharedExperts) } ?? 0
        moeIntermediateSize = try c.decodeIfPresent(Int.self, forKey: ConfigKey("moe_intermediate_size")) ?? configClass.moeIntermediateSize
        routedScalingFactor = try c.decodeIfPresent(Double.self, forKey: ConfigKey(configClass.scalingFactorKey)) ?? configClass.routedScalingFactor
        let reads = configClass.readsGroupKeys
        nGroup = reads ? try written(configClass.groupKey, absent: configClass.nGroup) : configClass.nGroup
        topkGroup = reads ? try written("topk_group", absent: configClass.topkGroup) : configClass.topkGroup
        normTopkProb = reads ? try written(configClass.renormalizeKey, absent: configClass.normTopkProb) ?? false : configClass.normTopkProb
        try ConfigRules.decodingChecks {
            // Both spellings name one attribute: two values would leave it to key order.
            if let routed, let alias, let local, routed != local {
                func text(_ value: Int?) -> String { value.map(String.init) ?? "null" }
                throw InvalidConfigValue(
                    key: configClass.expertsKey, problem: "is \(text(routed)), but \(alias) (the same setting) is \(text(local))")
            }
        }
    }

    /// The routed layers, as `GroupRoutedMixture` builds and checks them.
    var mixture: GroupRoutedMixture {
        var mixture = GroupRoutedMixture(
            experts: nRoutedExperts ?? 0, expertsKey: nRoutedExpertsKey, expertsPerToken: numExpertsPerTok,
            sharedExperts: nSharedExperts ?? 0, inner: moeIntermediateSize, scoring: configClass.scoring, groupScore: .sumOfBestTwo,
            groupLimited: !(configClass.ungroupedWhenNull && nGroup == nil), groups: nGroup, groupsPerToken: topkGroup, correctsSelection: configClass.scoring == .sigmoid,
            normalizesWeights: normTopkProb, scalingFactor: routedScalingFactor, sharedExpertsKey: configClass.sharedExpertsKey ?? "n_shared_experts",
            correctionBiasNames: configClass.correctionBiasNames, sharedName: configClass.sharedExpertsKey == nil ? nil : "shared_experts",
            scalingFactorKey: configClass.scalingFactorKey, expertNames: configClass.expertNames)
        mixture.excludedGroupScore = configClass.excludedGroupScore
        return mixture
    }

    /// The routed layers' experts under `mlp.experts.` (or `modules`' experts).
    func naming(isSparse: @escaping (Int) -> Bool, modules: [String] = ["mlp."]) -> ExpertNaming {
        let names = configClass.expertNames
        return ExpertNaming(
            parts: modules.map { $0 + "experts." }, projections: [names.gate, names.up, names.down], count: nRoutedExperts ?? 0,
            countKey: nRoutedExpertsKey, isSparse: isSparse)
    }

    /// Refuses counts, widths and groups transformers could not build or
    /// run the routed layers from (called only when some layer is routed).
    func check(hidden: Int) throws {
        var counts = [(nRoutedExperts, nRoutedExpertsKey, configClass.nRoutedExperts)]
        if let key = configClass.sharedExpertsKey { counts.append((nSharedExperts, key, configClass.nSharedExperts)) }
        for (value, key, classDefault) in counts where value == nil {
            // Absent, a None default; else config.json's null.
            throw InvalidConfigValue(
                key: key,
                problem: classDefault == nil ? "must be set for the routed layers (\(configClass.name)'s default is None)" : "is null, but the routed layers need it")
        }
        let routed = mixture
        try routed.checkExperts(hidden: hidden)
        try routed.checkGroups()
    }

    /// The first kept routed layer's router and experts against the
    /// counts and `moe_intermediate_size`, before any expert is read;
    /// `router` names a layer's router under its MLP (HY-V3's saved
    /// `router.gate` or `gate`), `module` the layer's MLP (Kimi Linear's
    /// released `block_sparse_moe.`).
    func confirm(
        _ parts: DecoderParts, isSparse: (Int) -> Bool, router: (Int) throws -> String = { _ in "gate" },
        module: (Int) throws -> String = { _ in "mlp." }
    ) throws {
        let routed = (0..<parts.dimensions.numHiddenLayers).filter(isSparse)
        if let layer = routed.first(where: { !parts.configuredDrops.dropsMLP($0) }) {
            try parts.confirmRouter(try module(layer) + router(layer), experts: nRoutedExperts ?? 0, expertsKey: nRoutedExpertsKey, layers: [layer])
        }
        try mixture.confirmExpertWidth(parts, isSparse: isSparse, module: module)
    }

    /// Layer `index`'s MLP under `layers.<index>.mlp.` (or `module`): router,
    /// routed and shared experts when `sparse` (the shared ones' activation
    /// `sharedActivation` when given), else the dense SwiGLU of `intermediate_size`.
    func feedForward(
        _ parts: DecoderParts, layer index: Int, sparse: Bool, activation: Activation, sharedActivation: Activation? = nil,
        module: String = "mlp."
    ) throws -> FeedForward {
        let p = "layers.\(index).\(module)", d = parts.dimensions.hiddenSize
        guard sparse else { return try parts.weights.gatedMLP(p, hidden: d, inner: parts.dimensions.intermediateSize, activation: activation) }
        return try mixture.load(parts.weights, p, hidden: d, activation: activation, sharedActivation: sharedActivation, sharedBias: false)
    }
}
