/// The tasks droptrace evaluates, by the harness's task name: the one list
/// of them (adding a task is its file in Tasks/ plus one line here).
enum TaskRegistry {
    static let tasks: [any HarnessTask.Type] = [
        HellaSwag.self, ARCEasy.self, ARCChallenge.self, PIQA.self, WinoGrande.self, BoolQ.self, OpenBookQA.self, MMLU.self,
    ]

    static func task(named name: String) -> (any HarnessTask.Type)? {
        tasks.first { $0.name == name }
    }
}
