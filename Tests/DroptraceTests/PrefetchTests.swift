@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// The forward pass expands the next block on a background thread while the
/// current one computes: same numbers, same errors, no work left behind.
@Suite struct PrefetchTests {
    /// Every state the pass saw, block by block, and its final hidden state.
    static func states(_ model: any LanguageModel, plan: DropPlan, prefetch: Bool, ids: [Int]) throws -> [[Float]] {
        var seen: [[Float]] = []
        let forward = LayerwiseForward(model: model, plan: plan, prefetch: prefetch)
        let hidden = try forward.run(TokenBatch(sequences: [ids, ids.reversed()])) { step in
            seen += [step.input.data, step.attentionResidual?.data ?? [], step.mlpInput.data, step.mlpResidual?.data ?? [],
                     step.output.data]
        }
        return seen + [hidden.data]
    }

    @Test(arguments: ["llama-f32", "gpt2-f32", "gpt_neox-f32", "mixtral-f32", "gpt_oss-bf16"])
    func prefetchGivesTheSameBitsAsExpandingInTurn(_ fixture: String) throws {
        let model = try ModelRegistry.load(try Checkpoint(directory: FixtureFiles.model(fixture)))
        let ids = (0..<24).map { ($0 * 37 + 5) % model.vocabularySize }
        // Dropping whole blocks and single branches changes which block is expanded next.
        let plans = [DropPlan.none, DropPlan(attention: [0], mlp: [2], blocks: [1])]
        for plan in plans {
            let sequential = try Self.states(model, plan: plan, prefetch: false, ids: ids)
            let prefetched = try Self.states(model, plan: plan, prefetch: true, ids: ids)
            #expect(prefetched == sequential, "\(fixture), plan \(plan)")
        }
    }

    /// F32/F16/BF16 blocks are only read ahead (two blocks are never expanded
    /// at once); quantised ones, costly to expand, are expanded ahead.
    @Test func plainFloatBlocksAreReadAheadAndQuantisedOnesExpanded() throws {
        let plain = try ModelRegistry.load(try Checkpoint(directory: FixtureFiles.model("llama-f32")))
        let quantised = try ModelRegistry.load(try Checkpoint(location: GGUFArchitectureFixtures.file("olmo2-q8_0.gguf")))
        for (model, expands) in [(plain, false), (quantised, true)] {
            let prefetch = BlockPrefetch(model, index: 1, skipping: .none)
            #expect(prefetch.expandsInBackground == expands, "\(model.modelType)")
            let block = try prefetch.block()
            #expect(block.attention != nil && block.mlp != nil)
        }
    }

    @Test func anExpansionErrorSurfacesWhenItsBlockIsReached() throws {
        let scratch = try ScratchDirectory()
        let directory = try scratch.copyOfModel("llama-f32")
        try Self.damage(directory, tensor: "model.layers.3.mlp.down_proj.weight")
        let model = try EditedModel.load(directory)
        let expected = try #require(Self.message { _ = try model.block(3) })
        #expect(expected.contains("model.layers.3.mlp.down_proj.weight"))
        for prefetch in [false, true] {
            var observed: [Int] = []
            let forward = LayerwiseForward(model: model, prefetch: prefetch)
            let message = Self.message { try forward.run(TokenBatch(sequences: [[1, 2, 3, 4]])) { observed.append($0.index) } }
            #expect(message == expected)
            #expect(observed == [0, 1, 2], "blocks before the damaged one run and are observed")
        }
        // An error of the block computing comes before that of the block being expanded.
        let forward = LayerwiseForward(model: model, prefetch: true)
        let message = Self.message {
            try forward.run(TokenBatch(sequences: [[1, 2, 3, 4]])) { step in
                if step.index == 2 { throw DroptraceError("observer stops at 2") }
            }
        }
        #expect(message == "observer stops at 2")
    }

    @Test func aThrowingObserverLeavesNoExpansionRunning() throws {
        let inner = try ModelRegistry.load(try Checkpoint(directory: FixtureFiles.model("llama-f32")))
        let model = SlowExpansion(inner: inner)
        for stop in 0..<inner.layerCount {
            let message = Self.message {
                try LayerwiseForward(model: model).run(TokenBatch(sequences: [[1, 2, 3]])) { step in
                    if step.index == stop { throw DroptraceError("stop at \(stop)") }
                }
            }
            #expect(message == "stop at \(stop)")
            #expect(model.running == 0, "the expansion under way was joined before the error propagated")
            // One block ahead at most: the block computing and the one after it.
            #expect(model.expanded.max() ?? 0 <= min(stop + 1, inner.layerCount - 1))
            model.reset()
        }
    }

    /// The error message of `body`, nil when it does not throw.
    static func message(_ body: () throws -> Void) -> String? {
        do {
            try body()
            return nil
        } catch let error as DroptraceError {
            return error.description
        } catch {
            return "\(error)"
        }
    }

    /// Relabels `tensor` of the checkpoint in `directory` with a shape of the
    /// same size that config.json does not imply.
    static func damage(_ directory: URL, tensor: String) throws {
        let url = directory.appendingPathComponent("model.safetensors")
        var entries = try SafetensorsFile(path: url.path).tensors.values.map { SafetensorsWriter.Entry($0) }
        let index = try #require(entries.firstIndex { $0.name == tensor })
        entries[index].shape = [entries[index].shape.reduce(1, *)]
        try SafetensorsWriter.encode(entries).write(to: url)
    }
}

/// A model whose block expansion takes a while and is counted, to see that
/// the forward pass joins it.
final class SlowExpansion: LanguageModel, @unchecked Sendable {
    let inner: any LanguageModel
    private let lock = NSLock()
    private var _running = 0
    private var _expanded: [Int] = []

    init(inner: any LanguageModel) { self.inner = inner }

    var running: Int { lock.withLock { _running } }
    var expanded: [Int] { lock.withLock { _expanded } }
    func reset() { lock.withLock { _expanded = [] } }

    var checkpoint: Checkpoint { inner.checkpoint }
    var modelType: String { inner.modelType }
    var layerCount: Int { inner.layerCount }
    var hiddenSize: Int { inner.hiddenSize }
    var vocabularySize: Int { inner.vocabularySize }
    var maxPositions: Int { inner.maxPositions }
    var configuredDrops: DropPlan { inner.configuredDrops }
    var layerNaming: LayerNaming { inner.layerNaming }
    func embed(_ batch: TokenBatch) throws -> Matrix { try inner.embed(batch) }
    func head() throws -> OutputHead { try inner.head() }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        lock.withLock {
            _running += 1
            _expanded.append(index)
        }
        defer { lock.withLock { _running -= 1 } }
        Thread.sleep(forTimeInterval: 0.02)
        return try inner.block(index, skipping: plan)
    }
}
