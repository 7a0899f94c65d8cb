import DroptraceSupport

/// The few-shot examples the harness puts before each evaluation document,
/// and the task description before them (`fewshot_context`).
///
/// The default sampler is one `random.Random(1234)` per task, drawing for
/// each evaluation document in file order, so the examples of document i
/// depend on every draw before it: documents must be visited in order.
struct FewshotSampler {
    let rule: FewshotRule
    let pool: [TaskExample]
    private var random: PythonRandom
    /// MMLU: each subject's dev documents, in file order.
    private let poolBySubject: [String: [Int]]

    init(rule: FewshotRule, pool: [TaskExample], seed: UInt64) {
        self.rule = rule
        self.pool = pool
        random = PythonRandom(seed: seed)
        var bySubject: [String: [Int]] = [:]
        if case .firstOfSubject = rule {
            for (index, example) in pool.enumerated() { bySubject[example.subject ?? "", default: []].append(index) }
        }
        poolBySubject = bySubject
    }

    /// Description and `shots` rendered examples for `example`.
    /// - Throws: `DroptraceError` when copies of the evaluation document
    ///   leave too few others (the suite checked the pool's size already).
    mutating func prefix(for example: TaskExample, shots: Int) throws -> String {
        var text = example.subject.map(MMLU.description(subject:)) ?? ""
        guard shots > 0 else { return text }
        for index in try draw(for: example, shots: shots) {
            text += PromptFormat.fewshotText(pool[index])
        }
        return text
    }

    private mutating func draw(for example: TaskExample, shots: Int) throws -> [Int] {
        switch rule {
        case .firstOfSubject:
            return Array(poolBySubject[example.subject ?? "", default: []].prefix(shots))
        case .random(excludingEvaluationDocument: false):
            return random.sample(count: pool.count, k: shots)
        case .random(excludingEvaluationDocument: true):
            // `ContextSampler.sample` with eval_doc: draw n + 1, drop copies
            // of the document, keep n; if copies left fewer, draw n again
            // from the pool without them.
            func isEvaluationDocument(_ index: Int) -> Bool {
                guard let mine = example.identity, let theirs = pool[index].identity else { return false }
                return PythonText.equal(mine, theirs)
            }
            let kept = random.sample(count: pool.count, k: shots + 1).filter { !isEvaluationDocument($0) }.prefix(shots)
            if kept.count == shots { return Array(kept) }
            let others = pool.indices.filter { !isEvaluationDocument($0) }
            guard others.count >= shots else {
                throw DroptraceError(
                    "\(example.location): only \(others.count) few-shot documents differ from this one; \(shots) are needed",
                    path: example.path)
            }
            return random.sample(count: others.count, k: shots).map { others[$0] }
        }
    }
}
