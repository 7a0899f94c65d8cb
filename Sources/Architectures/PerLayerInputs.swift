import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// Gemma 4's per-layer inputs (PLE, `hidden_size_per_layer_input` P > 0;
/// the E2B and E4B models): besides the residual stream, layer i reads an
/// input of its own for each token, [tokens, P], built from the token and
/// from its embedding as transformers' `Gemma4TextModel`
/// (`get_per_layer_inputs`, `project_per_layer_inputs`) builds it:
///
///     input_i = (RMSNorm_P(W_i x₀ · hidden^−½) + E[token, i] · √P) · 2^−½
///
/// with x₀ the scaled token embedding entering layer 0, W_i layer i's P rows
/// of `per_layer_model_projection` [layers · P, hidden], E
/// `embed_tokens_per_layer` [vocab_size_per_layer_input, layers · P] (layer
/// i's columns i · P ..< (i + 1) · P) and RMSNorm_P
/// `per_layer_projection_norm` [P]. Each layer's input is computed when the
/// layer runs, reading only its rows: all layers' at once would hold
/// tokens × layers × P values (290 MB for E2B on 8192 tokens).
///
/// Or, for a model whose blocks read the token embeddings themselves beside
/// the stream (Zamba2's shared transformer blocks, `embeddings(hidden:)`),
/// every layer's input is x₀ itself.
public struct PerLayerEmbedding: Sendable {
    /// Gemma 4's tensors; nil where each layer's input is x₀ itself.
    private struct Projected: Sendable {
        /// `embed_tokens_per_layer` read as [vocab · layers, P]: token t's
        /// piece for layer i is row t · layers + i.
        let table: TensorSlice
        /// `per_layer_model_projection.weight` [layers · P, hidden].
        let projection: TensorSlice
        let norm: Normalization
        let layers: Int
        /// The table's rows; a token past them reads row 0 where
        /// `outOfTableReadsRowZero` (Gemma 3n's `get_per_layer_inputs`, whose
        /// `vocab_size_per_layer_input` may be below `vocab_size`).
        let vocabulary: Int
        let outOfTableReadsRowZero: Bool
    }
    private let projected: Projected?
    /// P (hidden where each layer's input is x₀).
    public let width: Int
    let hiddenSize: Int

    private init(hiddenSize: Int) {
        projected = nil
        width = hiddenSize
        self.hiddenSize = hiddenSize
    }

    /// Every layer's input is the embeddings x₀ entering layer 0 [tokens, hidden].
    static func embeddings(hidden: Int) -> PerLayerEmbedding { PerLayerEmbedding(hiddenSize: hidden) }

    /// - Throws: `DroptraceError` naming the tensor whose shape the sizes
    ///   contradict, or one stored so that a layer's piece is not a row.
    init(
        weights: Weights, tableName: String, vocabulary: Int, layers: Int, width: Int, hiddenSize: Int, eps: Double,
        outOfTableReadsRowZero: Bool = false
    ) throws {
        let packed = try weights.tensor(tableName + ".weight", [vocabulary, layers * width])
        guard let table = packed.splittingRows(into: layers) else {
            throw DroptraceError("tensor '\(packed.name)' is stored in a form droptrace cannot read per layer (\(packed.dtype))", path: packed.path)
        }
        projected = Projected(
            table: table, projection: try weights.tensor("per_layer_model_projection.weight", [layers * width, hiddenSize]),
            norm: try weights.rmsNorm("per_layer_projection_norm", size: width, eps: eps), layers: layers, vocabulary: vocabulary,
            outOfTableReadsRowZero: outOfTableReadsRowZero)
        (self.width, self.hiddenSize) = (width, hiddenSize)
    }

    /// The stored tensors that pack a piece per layer, for exports.
    var packedTensors: [LayerNaming.PackedPerLayerTensor] {
        guard let projected else { return [] }
        return [.init(name: projected.table.name, axis: 1, width: width), .init(name: projected.projection.name, axis: 0, width: width)]
    }

    /// Layer `layer`'s inputs [tokens, P] for tokens `tokenIDs` whose
    /// embeddings x₀ are `embedded` [tokens, hidden] (or its first hidden
    /// columns: Gemma 3n's AltUp streams, whose stream 0 is x₀).
    /// - Throws: `DroptraceError` when the checkpoint's file changed or a
    ///   token has no row (`vocab_size_per_layer_input` is checked against
    ///   `vocab_size` when the model is read).
    public func input(layer: Int, tokenIDs: [Int], embedded: Matrix) throws -> Matrix {
        precondition(embedded.rows == tokenIDs.count && embedded.cols % hiddenSize == 0)
        guard let parts = projected else { return embedded }
        let (table, projection, norm, layers) = (parts.table, parts.projection, parts.norm, parts.layers)
        precondition((0..<layers).contains(layer))
        let embedded = embedded.cols == hiddenSize ? embedded : embedded.columns(0..<hiddenSize)
        var rows = [Float](repeating: 0, count: width * hiddenSize)
        try rows.withUnsafeMutableBufferPointer {
            try projection.expandRows(Array(layer * width..<(layer + 1) * width), into: $0.baseAddress!)
        }
        let projected = norm(Linear(weight: rows, bias: nil, inFeatures: hiddenSize, outFeatures: width)(embedded)
            .scaled(by: Float(pow(Double(hiddenSize), -0.5))))
        let tableRows = parts.outOfTableReadsRowZero ? tokenIDs.map { $0 < parts.vocabulary ? $0 : 0 } : tokenIDs
        let tokens = try gatherRows(table, ids: tableRows.map { $0 * layers + layer }, width: width)
        let tokenScale = Float(Double(width).squareRoot()), combined = Float(pow(2.0, -0.5))
        return Matrix(uninitialized: projected.rows, width) { out in
            for i in 0..<(projected.rows * width) { out[i] = (projected.data[i] + tokens.data[i] * tokenScale) * combined }
        }
    }
}

/// The third residual branch of a Gemma 4 layer with per-layer inputs,
/// after the MLP's add and before the layer's scalar:
///
///     Y ← Y + RMSNorm(per_layer_projection(act(per_layer_input_gate Y) ⊙ input))
///
/// (`Gemma4TextDecoderLayer`; the activation is `hidden_activation`, the
/// norm `post_per_layer_input_norm`). Neither attention nor MLP: the
/// block's score includes it; dropping the attention or the MLP keeps it.
public struct PerLayerInputBranch: Sendable {
    /// [P, hidden].
    public let gate: Linear
    public let activation: Activation
    /// [hidden, P].
    public let projection: Linear
    public let norm: Normalization

    /// The branch output [rows, hidden] for stream `y` and the rows'
    /// per-layer inputs `input` [rows, P].
    func callAsFunction(_ y: Matrix, input: Matrix) -> Matrix {
        var gated = gate(y)
        precondition(gated.rows == input.rows && gated.cols == input.cols)
        activation.apply(inPlace: &gated)
        gated.data.withUnsafeMutableBufferPointer { values in
            for i in values.indices { values[i] *= input.data[i] }
        }
        return norm(projection(gated))
    }
}

/// Token embeddings with the per-layer inputs of every layer where the
/// model takes them: looked up once, before a key/value-cache decoder is
/// timed, and sliced by rows.
public struct EmbeddedTokens: Sendable {
    /// [tokens, hidden].
    public let rows: Matrix
    /// Each layer's inputs [tokens, P]; empty for a model without.
    public let perLayer: [Matrix]
    /// The rows' tokens (DeepSeek-V4's hash routing reads them).
    public let tokenIDs: [Int]

    /// `batch`'s embeddings and, where `model` takes them, its per-layer inputs.
    public init(_ batch: TokenBatch, model: any LanguageModel) throws {
        let rows = try model.embed(batch)
        self.rows = rows
        tokenIDs = batch.tokenIDs
        perLayer = try model.perLayerEmbedding.map { embedding in
            try (0..<model.layerCount).map { try embedding.input(layer: $0, tokenIDs: batch.tokenIDs, embedded: rows) }
        } ?? []
    }

    private init(rows: Matrix, perLayer: [Matrix], tokenIDs: [Int]) {
        self.rows = rows
        self.perLayer = perLayer
        self.tokenIDs = tokenIDs
    }

    /// The rows `range` of each.
    public func rows(_ range: Range<Int>) -> EmbeddedTokens {
        EmbeddedTokens(rows: rows.rows(range), perLayer: perLayer.map { $0.rows(range) }, tokenIDs: Array(tokenIDs[range]))
    }

    /// Layer `index`'s per-layer inputs, nil for a model without.
    public func perLayerInput(_ index: Int) -> Matrix? { perLayer.isEmpty ? nil : perLayer[index] }
}
