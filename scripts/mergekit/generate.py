#!/usr/bin/env python3
"""Write Sources/Dropping/MergekitArchitectures+Mergekit.swift: the architectures mergekit's
passthrough merge can slice, and the config key it sets to the merged layer count.

mergekit writes the merged model's config.json as the source's with one key changed: the layer
count, under the `num_layers_config_key` of its definition of the source's architecture
(config.json's `architectures[0]`, told apart by model_type where one name has several). For an
architecture it has no definition of, it infers one that sets no count: the merged model keeps the
source's layer count, and transformers fills the layers it lacks with random weights. A definition
of several modules (a vision tower beside the text decoder) refuses `slices:` outright. And a
definition copies the tensors it names, no others: a bias or norm it does not list is left out of
the merged model, which transformers then fills with random weights. So `--export-mergekit` writes
slices only for the single-module definitions listed here, and only for checkpoints whose every
tensor one of their names covers.

Run in a venv with mergekit installed (bench/README.md has the fixture venv; add `pip install mergekit`):
    python3 scripts/mergekit/generate.py > Sources/Dropping/MergekitArchitectures+Mergekit.swift
"""
import importlib.metadata
import re
import sys
import types
from pathlib import Path

from mergekit.architecture import moe_defs
from mergekit.architecture.json_definitions import NAME_TO_ARCH
from transformers.conversion_mapping import get_checkpoint_conversion_mapping
from transformers.core_model_loading import WeightConverter, WeightRenaming

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "weight_conversions"))
from generate import compiled_pattern, swift_string  # noqa: E402


# Sentinels for the layer count and a layer's index, told apart from every other number in a name.
LAYERS, LAYER = 7919, 6007


def templates(module):
    """The tensor names `module` copies, each number it fills in (a layer's index, the layer count, an
    expert's index) as `{n}`, with their aliases (the names its passthrough writes, all others left out),
    each with whether the passthrough cannot do without it (a name it does not mark optional; an alias never)."""
    required = {}
    # Dense layers below first_k_dense_replace and sparse ones above (GLM-4-MoE's code definition).
    for dense in (0, LAYER + 1):
        config = types.SimpleNamespace(
            num_hidden_layers=LAYERS, n_layer=LAYERS, num_experts=1, n_routed_experts=1, first_k_dense_replace=dense)
        weights = module.pre_weights(config) + (module.layer_weights(LAYER, config) or []) + module.post_weights(config)
        for weight in weights:
            required[weight.name] = required.get(weight.name, False) or not weight.optional
            for alias in weight.aliases or ():
                required.setdefault(alias, False)
    numbers = "|".join(str(n) for n in (LAYERS - 1, LAYERS, LAYERS + 1, LAYER - 1, LAYER, LAYER + 1))
    templated = {}
    for name, needed in required.items():
        template = re.sub(r"\.experts\.0\.", ".experts.{n}.", re.sub(numbers, "{n}", name))
        templated[template] = templated.get(template, False) or needed
    return sorted(templated.items())


def name_table(table):
    """The entries of a Swift table architecture -> model_type -> (tensor name, required), one name per line."""
    lines = []
    for name in sorted(table):
        lines.append(f'        "{name}": [')
        for model_type, names in sorted(table[name].items()):
            lines.append(f'            "{model_type}": [')
            lines += [f'                ("{template}", {"true" if needed else "false"}),' for template, needed in names]
            lines.append("            ],")
        lines.append("        ],")
    return lines


def main():
    single = {}
    several = set()
    tensors = {}
    for name, definitions in NAME_TO_ARCH.items():
        for definition in definitions:
            modules = definition.modules
            if len(modules) != 1:
                several.add(name)
                continue
            module = next(iter(modules.values())).architecture
            if module.num_layers_config_key():
                single.setdefault(name, {})[definition.expected_model_type] = module.num_layers_config_key()
                tensors.setdefault(name, {})[definition.expected_model_type] = templates(module)
    # Defined in code, from the source's config: one module each, counted by the partial definition's key.
    for module in (moe_defs.AfmoeModuleArchitecture, moe_defs.Glm4MoeModuleArchitecture):
        single[module.ARCHITECTURE_NAME] = {"*": module.num_layers_config_key(None)}
        tensors[module.ARCHITECTURE_NAME] = {"*": templates(module(num_experts=1))}
    # mergekit reads a checkpoint through transformers' conversion mapping of its model_type.
    renamings = {}
    converted = {}
    for model_type in sorted({t for per_type in tensors.values() for t in per_type if t != "*"} | {"afmoe", "glm4_moe"}):
        mapping = get_checkpoint_conversion_mapping(model_type) or []
        rules = [(compiled_pattern(t), t.target_patterns[0]) for t in mapping
                 if type(t) is WeightRenaming and t.scope_prefix is None]
        if rules:
            renamings[model_type] = rules
        targets = [target for t in mapping if type(t) is WeightConverter for target in t.target_patterns]
        if targets:
            converted[model_type] = targets
    version = importlib.metadata.version("mergekit")
    lines = [
        f"// Generated by scripts/mergekit/generate.py from mergekit {version}; do not edit.",
        "",
        "extension MergekitSlices {",
        "    /// The mergekit release the tables below are read from.",
        f'    static let mergekitVersion = "{version}"',
        "",
        "    /// Per architecture (config.json's `architectures[0]`) mergekit defines as one module of",
        "    /// layers, by the model_type of each definition (\"*\": any): the config key its passthrough",
        "    /// sets to the merged layer count (a dotted path into a section).",
        "    static let layerCountKeys: [String: [String: String]] = [",
    ]
    for name in sorted(single):
        entries = ", ".join(f'"{model_type}": "{key}"' for model_type, key in sorted(single[name].items()))
        lines.append(f'        "{name}": [{entries}],')
    lines += [
        "    ]",
        "",
        "    /// Per architecture and model_type as above: the names of the tensors its passthrough",
        "    /// copies (and their aliases), each number it fills in (a layer's or expert's index) as `{n}`,",
        "    /// each with whether it cannot do without it (its passthrough refuses a checkpoint lacking one).",
        "    /// Tensors of other names are left out of the merged model.",
        "    static let tensorTemplates: [String: [String: [(name: String, required: Bool)]]] = [",
    ]
    lines += name_table(tensors)
    lines += [
        "    ]",
        "",
        "    /// Per model_type, the `WeightRenaming` rules of transformers' conversion mapping, which mergekit",
        "    /// applies to a checkpoint's names before it looks for a definition's: each (regular expression,",
        "    /// replacement) turns the first match in a name into the replacement, in order.",
        "    static let renamings: [String: [(pattern: String, replacement: String)]] = [",
    ]
    for model_type, rules in renamings.items():
        lines.append(f'        "{model_type}": [')
        lines += [f"            ({swift_string(pattern)}, {swift_string(replacement)})," for pattern, replacement in rules]
        lines.append("        ],")
    lines += [
        "    ]",
        "",
        "    /// Per model_type, the tensors transformers' conversion mapping builds from others (fused experts",
        "    /// from per-expert ones), which mergekit builds likewise: the end of each one's name.",
        "    static let convertedTensors: [String: [String]] = [",
    ]
    for model_type, targets in converted.items():
        lines.append(f'        "{model_type}": [' + ", ".join(swift_string(t) for t in targets) + "],")
    lines += [
        "    ]",
        "",
        "    /// Architectures mergekit defines as several modules (a vision tower beside the text",
        "    /// decoder), which refuse a merge given as `slices:`.",
        "    static let multiModuleArchitectures: Set<String> = [",
    ]
    lines += [f'        "{name}",' for name in sorted(several - set(single))]
    lines += ["    ]", "}", ""]
    sys.stdout.write("\n".join(lines))


if __name__ == "__main__":
    main()
