import Foundation

/// `mmlu` (cais/mmlu, the "all" configuration's rows with their `subject`):
/// `lm_eval/tasks/mmlu/default/_default_template_yaml`, one task per subject
/// (`mmlu_<subject>.yaml`: its description), grouped into four categories
/// and those into `mmlu` (`_mmlu*.yaml`); a group's acc is the size-weighted
/// mean of its leaf tasks, the subjects, and its stderr their pooled one.
/// Few-shot examples are the first n of the subject's dev split. acc only.
enum MMLU: HarnessTask {
    static let name = "mmlu"
    static let dataset = "cais/mmlu (all; few-shot: dev)"
    static let reportsNormalizedAccuracy = false
    static let fewshotRule = FewshotRule.firstOfSubject

    /// "{{question.strip()}}\nA. {{choices[0]}}\nB. …\nD. {{choices[3]}}\nAnswer:",
    /// choices A–D, target `answer`.
    static func example(_ document: TaskDocument) throws -> TaskExample {
        let subject = try document.string("subject")
        guard categories[subject] != nil else {
            throw document.failure("\"subject\" \(subject.debugDescription) is not one of MMLU's 57 subjects")
        }
        let options = try document.strings("choices")
        guard options.count == 4 else { throw document.failure("\"choices\" should hold 4 answers, not \(options.count)") }
        let question = PythonText.strip(try document.string("question"))
        let text = "\(question)\nA. \(options[0])\nB. \(options[1])\nC. \(options[2])\nD. \(options[3])\nAnswer:"
        let letters = ["A", "B", "C", "D"]
        return TaskExample(
            prompt: .question(text), choices: letters, gold: try document.target("answer", choices: letters), subject: subject)
    }

    /// The subject's task description, before the few-shot examples.
    static func description(subject: String) -> String {
        "The following are multiple choice questions (with answers) about \(subject.replacingOccurrences(of: "_", with: " ")).\n\n"
    }

    /// The harness's groups, in `_mmlu.yaml`'s order.
    enum Category: String, CaseIterable, Sendable {
        case stem, other, socialSciences = "social_sciences", humanities
    }

    /// Each subject's group (the `tag` of its `mmlu_<subject>.yaml`).
    static let categories: [String: Category] = [
        "abstract_algebra": .stem,
        "anatomy": .stem,
        "astronomy": .stem,
        "business_ethics": .other,
        "clinical_knowledge": .other,
        "college_biology": .stem,
        "college_chemistry": .stem,
        "college_computer_science": .stem,
        "college_mathematics": .stem,
        "college_medicine": .other,
        "college_physics": .stem,
        "computer_security": .stem,
        "conceptual_physics": .stem,
        "econometrics": .socialSciences,
        "electrical_engineering": .stem,
        "elementary_mathematics": .stem,
        "formal_logic": .humanities,
        "global_facts": .other,
        "high_school_biology": .stem,
        "high_school_chemistry": .stem,
        "high_school_computer_science": .stem,
        "high_school_european_history": .humanities,
        "high_school_geography": .socialSciences,
        "high_school_government_and_politics": .socialSciences,
        "high_school_macroeconomics": .socialSciences,
        "high_school_mathematics": .stem,
        "high_school_microeconomics": .socialSciences,
        "high_school_physics": .stem,
        "high_school_psychology": .socialSciences,
        "high_school_statistics": .stem,
        "high_school_us_history": .humanities,
        "high_school_world_history": .humanities,
        "human_aging": .other,
        "human_sexuality": .socialSciences,
        "international_law": .humanities,
        "jurisprudence": .humanities,
        "logical_fallacies": .humanities,
        "machine_learning": .stem,
        "management": .other,
        "marketing": .other,
        "medical_genetics": .other,
        "miscellaneous": .other,
        "moral_disputes": .humanities,
        "moral_scenarios": .humanities,
        "nutrition": .other,
        "philosophy": .humanities,
        "prehistory": .humanities,
        "professional_accounting": .other,
        "professional_law": .humanities,
        "professional_medicine": .other,
        "professional_psychology": .socialSciences,
        "public_relations": .socialSciences,
        "security_studies": .socialSciences,
        "sociology": .socialSciences,
        "us_foreign_policy": .socialSciences,
        "virology": .other,
        "world_religions": .humanities,
    ]
}
