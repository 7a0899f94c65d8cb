import Architectures
import CheckpointIO
import Foundation
import TensorEngine
import Testing

/// Router and experts of fixture `name`'s mixture-of-experts layer against
/// transformers' own MoE block, on transformers' own input to it
/// (reference.json `routing_check`): the same experts per token, their
/// weights within 1e-6, the block's output within 1e-5. `unordered`: each
/// token's experts are compared as a set, each with its weight (routers
/// whose top-k transformers leaves unsorted: DeepSeek-V3's and its kin's).
func expectRoutingMatchesTransformers(_ name: String, unordered: Bool = false) throws {
    func floats(_ value: Any?) -> [[Float]] { (value as! [[Any]]).map { $0.map { ($0 as! NSNumber).floatValue } } }
    let check = FixtureFiles.entry(name)["routing_check"] as! [String: Any]
    let layer = (check["layer"] as! NSNumber).intValue
    let input = floats(check["input"])
    let expectedExperts = (check["top_k_experts"] as! [[Any]]).map { $0.map { ($0 as! NSNumber).intValue } }
    let expectedWeights = floats(check["top_k_weights"])
    let expectedOutput = floats(check["output"])

    let model = try ModelRegistry.load(try Checkpoint(directory: FixtureFiles.model(name)))
    // LongCat-Flash's MoE is the shortcut its layer's MLP branch holds beside its dense MLP.
    let mlp = try model.block(layer).mlp
    guard case .mixture(let moe)? = mlp?.shortcut?.feedForward ?? mlp?.feedForward else {
        Issue.record("\(name)'s MLP \(layer) is not a mixture of experts")
        return
    }
    let x = Matrix(rows: input.count, cols: input[0].count, data: input.flatMap { $0 })
    let routing = moe.route(x)
    let k = routing.expertsPerToken
    #expect(k == expectedExperts[0].count)
    var worstWeight: Float = 0
    for token in 0..<x.rows {
        let experts = Array(routing.experts[(token * k)..<((token + 1) * k)])
        if unordered {
            let chosen = Dictionary(uniqueKeysWithValues: (0..<k).map { (experts[$0], routing.weights[token * k + $0]) })
            #expect(Set(experts) == Set(expectedExperts[token]), "token \(token): experts \(experts) vs \(expectedExperts[token])")
            for (slot, expert) in expectedExperts[token].enumerated() {
                worstWeight = max(worstWeight, abs((chosen[expert] ?? .infinity) - expectedWeights[token][slot]))
            }
            continue
        }
        #expect(experts == expectedExperts[token], "token \(token): experts \(experts) vs \(expectedExperts[token])")
        for slot in 0..<k { worstWeight = max(worstWeight, abs(routing.weights[token * k + slot] - expectedWeights[token][slot])) }
    }
    #expect(worstWeight < 1e-6, "router weights differ by \(worstWeight)")
    let output = moe(x)
    let worst = zip(output.data, expectedOutput.joined()).map { abs($0 - $1) }.max() ?? .infinity
    #expect(worst < 1e-5, "MoE output differs by \(worst)")
}

/// Layer `layer`'s routed mixture of experts, or nil for a dense MLP.
func mlpMixture(_ model: any LanguageModel, layer: Int) throws -> MixtureOfExperts? {
    // LongCat-Flash's MoE is the shortcut its layer's MLP branch holds beside its dense MLP.
    let mlp = try model.block(layer).mlp
    guard case .mixture(let moe)? = mlp?.shortcut?.feedForward ?? mlp?.feedForward else { return nil }
    return moe
}

/// The mixture's group-limited top-k routing, or nil for another rule.
func groupLimitedRule(_ moe: MixtureOfExperts?) -> GroupLimitedTopK? {
    guard case .groupLimited(let rule)? = moe?.rule else { return nil }
    return rule
}
