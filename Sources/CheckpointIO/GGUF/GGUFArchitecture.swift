import DroptraceSupport

/// What droptrace knows of one llama.cpp architecture (`general.architecture`,
/// names from gguf-py's `MODEL_ARCH_NAMES`): how llama.cpp's converter
/// (convert_hf_to_gguf.py) renamed and rearranged the Hugging Face tensors, and
/// how its metadata keys become the config.json keys of the Hugging Face model
/// type. Each architecture is one table (GGUFArchitectures.swift); the
/// readers (`GGUFConfiguration`, `GGUFTensorNames`, `GGUFCheckpoint`) only
/// interpret tables.
struct GGUFArchitecture: Sendable {
    /// How a stored tensor differs from its Hugging Face counterpart besides the name.
    enum Layout: Sendable, Equatable {
        /// Q or K rows permuted per head from rotate-half to interleaved pairs (`llama`).
        case rotaryInterleaved(HeadGroup)
        /// GPT-NeoX's and BLOOM's fused QKV as all q, all k, all v rows instead of per head.
        case groupedQKV
        /// Falcon's fused QKV as all q, all k, all v rows instead of per key/value
        /// group (the group's query heads, then its key and its value head).
        case kvGroupedQKV
        /// GPT-2's Conv1D weights ([in, out]) stored as [out, in].
        case transposedConv1D
        /// Gemma's (1 + w) RMSNorm weights stored as 1 + w.
        case normPlusOne
        /// A [1, n] matrix, which a file may store with its unit dimension
        /// unwritten (Qwen2-MoE's shared-expert gate).
        case matrix
    }

    /// Which heads a Q/K projection's rows hold.
    enum HeadGroup: Sendable, Equatable {
        case query, keyValue
    }

    /// A block tensor's Hugging Face place.
    enum Place: Sendable, Equatable {
        /// The module within the layer (`self_attn.q_proj`); weight and bias keep their suffix.
        case module(String, Layout?)
        /// A 3-D `[experts, out, in]` stack cut into per-expert tensors:
        /// the module with `{e}` standing for the expert (`mlp.experts.{e}.gate_proj`).
        case perExpert(String)
        /// A 2-D `[heads, width]` stack cut into per-head vectors, `{e}`
        /// standing for the head (StableLM's `self_attn.q_layernorm.norms.{e}`).
        case perHead(String)
        /// A fused projection whose rows are the listed modules' rows, one
        /// after another in equal parts (phi-2's `attn_qkv` of files converted
        /// from Microsoft's layout: q, k, v).
        case rowParts([String])
    }

    /// One Hugging Face tensor a block's GGUF tensors make together (or
    /// rearranged beyond rows): `sources` are GGUF names within the block
    /// (`attn_k_b.weight`); `build` gets their slices (all present) and the
    /// configuration, and returns the Hugging Face tensor or throws when their
    /// shapes disagree with the configuration.
    struct Composite: Sendable {
        let name: String
        let sources: [String]
        let build: @Sendable (_ name: String, _ sources: [TensorSlice], _ config: GGUFConfiguration) throws -> TensorSlice
    }

    /// Sizes read from the metadata common to all architectures, checked and
    /// confirmed by the tensors before a table's `config` sees them.
    struct Sizes {
        let hidden, layers, heads, kvHeads, headDim, feedForward, context, vocabulary: Int
        let tied: Bool
        let theta: Double
        /// Expert count (0 for dense models).
        let experts: Int
    }

    /// What a table's `config` reads: the metadata (`key` prefixes the
    /// architecture), the sizes, the tensors' dimensions and the small float
    /// tensors llama.cpp keeps rope factors in.
    struct Input {
        let metadata: GGUFMetadata
        let sizes: Sizes
        let tensorDimensions: [String: [Int]]
        let ropeTensors: [String: [Float]]
        let architecture: GGUFArchitecture

        func key(_ suffix: String) -> String { architecture.name + "." + suffix }
        var path: String { metadata.path }

        /// Whether block `layer` has GGUF tensor `name` (e.g. `ffn_gate_inp.weight`).
        func block(_ layer: Int, has name: String) -> Bool { tensorDimensions["blk.\(layer).\(name)"] != nil }

        /// The keys every table gives: sizes, tied head and `rope_parameters` from the rope keys.
        func sized(_ modelType: String) throws -> [String: Any] {
            [
                "model_type": modelType,
                "hidden_size": sizes.hidden, "num_hidden_layers": sizes.layers, "num_attention_heads": sizes.heads,
                "num_key_value_heads": sizes.kvHeads, "intermediate_size": sizes.feedForward,
                "vocab_size": sizes.vocabulary, "max_position_embeddings": sizes.context,
                "tie_word_embeddings": sizes.tied, "rope_parameters": try GGUFConfiguration.rope(self),
            ]
        }

        /// The keys shared by the Llama-shaped models: `sized`'s, the head
        /// width, RMSNorm epsilon, SiLU and no attention biases.
        func llamaShaped(_ modelType: String) throws -> [String: Any] {
            var config = try sized(modelType)
            config["head_dim"] = sizes.headDim
            config["rms_norm_eps"] = try metadata.positiveFloat32(key("attention.layer_norm_rms_epsilon"))
            config["hidden_act"] = "silu"
            config["attention_bias"] = false
            return config
        }

        /// Refuses key `suffix` when the file gives it another value than
        /// `inert` (the value that changes nothing): llama.cpp reads it for
        /// this architecture, to `effect`, which no Hugging Face model of
        /// the type does, so droptrace cannot give that model's numbers and
        /// will not ignore it.
        func refuseUnmodelled(_ suffix: String, inert: Double, effect: String) throws {
            guard let value = try metadata.optionalFloat32(key(suffix)), Float(value) != Float(inert) else { return }
            throw unmodelled(suffix, shown: "\(Float(value))", effect: effect)
        }

        /// `refuseUnmodelled` for a count (a UINT32 key).
        func refuseUnmodelled(_ suffix: String, inertCount inert: Int, effect: String) throws {
            guard let value = try metadata.optionalUInt32(key(suffix)), value != inert else { return }
            throw unmodelled(suffix, shown: "\(value)", effect: effect)
        }

        private func unmodelled(_ suffix: String, shown value: String, effect: String) -> DroptraceError {
            InvalidConfigValue(
                key: key(suffix),
                problem: "is \(value): llama.cpp reads it for \(architecture.name) files to \(effect), which no Hugging Face model droptrace reads does; refused rather than ignored"
            ).error(path: path)
        }

        /// LayerNorm's epsilon (`attention.layer_norm_epsilon`).
        func layerNormEpsilon() throws -> Double { try metadata.positiveFloat32(key("attention.layer_norm_epsilon")) }

        /// Whether every block has GGUF tensor `name` (`attn_q.bias`); refuses
        /// a file where only some do, which no Hugging Face config describes.
        func everyBlock(has name: String) throws -> Bool {
            let having = (0..<sizes.layers).filter { block($0, has: name) }.count
            guard having == 0 || having == sizes.layers else {
                throw DroptraceError(
                    "\(having) of \(sizes.layers) blocks have tensor \(name) and the others not; droptrace reads \(architecture.name) models with it in every block or in none",
                    path: path)
            }
            return having > 0
        }

        /// `layer_types` with the layers for which `sliding` holds as sliding-window layers.
        func layerTypes(_ sliding: (Int) -> Bool) -> [String] {
            (0..<sizes.layers).map { sliding($0) ? "sliding_attention" : "full_attention" }
        }
    }

    /// The heads a projection's rows hold, for confirming the head counts.
    enum ProjectionHeads: Sendable {
        /// The query heads, or the key/value heads.
        case query, keyValue
        /// All q, then all k, then all v rows: heads + 2 · kv heads.
        case queryKeyValue
    }

    /// Which projection's rows confirm the head counts and width: GGUF name
    /// suffix within a block and the heads whose rows it holds.
    enum AttentionRows: Sendable {
        /// Projections of whole heads (those the file holds are checked):
        /// rows = heads · head width.
        case projections([(suffix: String, heads: ProjectionHeads)])
        /// One fused projection of per-head q, k, v with the heads filling the
        /// embedding (GPT-NeoX, GPT-2): rows = 3 · heads · head width.
        case fusedPerHead(String)

        /// Separate `attn_q` and `attn_k` projections, the most common case.
        static let separateQK = AttentionRows.projections([("attn_q.weight", .query), ("attn_k.weight", .keyValue)])
    }

    /// `general.architecture`.
    let name: String
    /// The Hugging Face prefix of the base model and its layer list.
    let prefix: String
    var layerList = "layers"
    /// Top-level GGUF tensor → Hugging Face name (without `prefix` for `lm_head.weight`).
    let topLevel: [String: String]
    /// Block tensor base name (`attn_q`) → place.
    let blocks: [String: Place]
    /// Whole block tensor names (`exp_probs_b.bias`) → module and suffix within the layer, for
    /// tensors whose Hugging Face suffix is not `.weight` / `.bias`.
    var blockTensors: [String: String] = [:]
    var composites: [Composite] = []
    /// Layout of the top-level norms.
    var topLevelLayout: Layout? = nil
    let attentionRows: AttentionRows
    /// The metadata key giving the head width of Q and K, when not `attention.key_length`.
    var headWidthKey = "attention.key_length"
    /// The rope factor tensors (of `ropeFactorTensors`) llama.cpp creates for
    /// this architecture; another is a tensor the file should not hold.
    var ropeFactors: Set<String> = []
    /// Whether `expert_count` may be above 0 (elsewhere it marks a model the
    /// table does not describe) and whether it must be.
    var experts = Experts.none
    /// Block tensors the converter moved into per-layer metadata (Apertus'
    /// xIELU parameters): the module within the layer, the metadata key, the
    /// tensor's Hugging Face shape (one value).
    var layerValues: [(module: String, key: String, shape: [Int])] = []
    /// The config.json equivalent.
    let config: @Sendable (Input) throws -> [String: Any]
    /// For an architecture whose files name the same tensor for different
    /// Hugging Face modules (Falcon's `attn_norm`: `ln_attn` beside an
    /// `attn_norm_2`, `input_layernorm` alone): the table for a file, by its
    /// tensors' names.
    var variant: (@Sendable (_ tensorDimensions: [String: [Int]]) -> GGUFArchitecture)? = nil

    enum Experts: Sendable {
        /// Dense models only.
        case none
        /// Mixture-of-experts models only (`expert_count` required).
        case required
        /// Either (`llama`: Mixtral is written as `llama` with experts).
        case optional
    }
}

extension GGUFArchitecture {
    /// Top-level vectors of per-frequency rope factors: Llama 3's divisors,
    /// LongRoPE's long- and short-context factors.
    static let ropeFactorTensors = ["rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight"]
}

extension GGUFArchitecture.Place {
    /// The Llama-shaped block tensors, shared by most tables.
    static let llamaBlocks: [String: GGUFArchitecture.Place] = [
        "attn_norm": .module("input_layernorm", nil), "attn_q": .module("self_attn.q_proj", nil),
        "attn_k": .module("self_attn.k_proj", nil), "attn_v": .module("self_attn.v_proj", nil),
        "attn_output": .module("self_attn.o_proj", nil), "ffn_norm": .module("post_attention_layernorm", nil),
        "ffn_gate": .module("mlp.gate_proj", nil), "ffn_up": .module("mlp.up_proj", nil),
        "ffn_down": .module("mlp.down_proj", nil),
    ]

    /// The Llama blocks with Q and K rows as llama.cpp's converter permutes
    /// them for its interleaved rotary (`LlamaModel.permute`).
    static let llamaPermutedBlocks: [String: GGUFArchitecture.Place] = llamaBlocks.adding([
        "attn_q": .module("self_attn.q_proj", .rotaryInterleaved(.query)),
        "attn_k": .module("self_attn.k_proj", .rotaryInterleaved(.keyValue)),
    ])

    /// Gemma 2 and 3's norms around attention and MLP, stored as 1 + w.
    static let sandwichNorms: [String: GGUFArchitecture.Place] = [
        "attn_norm": .module("input_layernorm", .normPlusOne),
        "post_attention_norm": .module("post_attention_layernorm", .normPlusOne),
        "ffn_norm": .module("pre_feedforward_layernorm", .normPlusOne),
        "post_ffw_norm": .module("post_feedforward_layernorm", .normPlusOne),
    ]

    /// Per-head (or whole-projection) q/k RMSNorms.
    static let qkNorms: [String: GGUFArchitecture.Place] = [
        "attn_q_norm": .module("self_attn.q_norm", nil), "attn_k_norm": .module("self_attn.k_norm", nil),
    ]

    /// Routed experts stacked by llama.cpp, per expert in Hugging Face.
    static let stackedExperts: [String: GGUFArchitecture.Place] = [
        "ffn_gate_inp": .module("mlp.gate", nil),
        "ffn_gate_exps": .perExpert("mlp.experts.{e}.gate_proj"), "ffn_up_exps": .perExpert("mlp.experts.{e}.up_proj"),
        "ffn_down_exps": .perExpert("mlp.experts.{e}.down_proj"),
    ]
}

extension Dictionary where Key == String, Value == GGUFArchitecture.Place {
    /// These places with `other`'s added (`other` wins).
    func adding(_ other: [String: GGUFArchitecture.Place]) -> Self { merging(other) { $1 } }
}
