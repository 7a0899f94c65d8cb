#!/usr/bin/env python3
r"""Write Sources/Architectures/WeightConversions+Transformers.swift: which per-expert tensors
transformers collects into fused experts, per model_type.

transformers 5 stores a mixture-of-experts layer's experts as two 3-D parameters
(`mlp.experts.gate_up_proj`, `mlp.experts.down_proj`). Checkpoints saved per expert
(`mlp.experts.<e>.gate_proj.weight`, ...) load only where the model's conversion mapping collects them
(a `WeightConverter` with `MergeModulelist`, or ERNIE 4.5 VL's `ErnieFuseAndSplitTextVisionExperts`, which
also splits them into text and vision experts). `get_model_conversion_mapping` looks the mapping up for
each PreTrainedModel in the model by its `config.model_type`: the checkpoint's, and in a multimodal
model the text model's, which is `text_config.model_type` as config.json writes it, else its config
class's. Elsewhere the per-expert tensors are unexpected keys and the fused parameters are initialised
randomly. The table lists each model_type's collected patterns (`*` stands for the expert index),
for every model_type transformers registers such a converter for (a text_config may name any of
them).

Run in a venv with the transformers version droptrace matches:
    python3 scripts/weight_conversions/generate.py > Sources/Architectures/WeightConversions+Transformers.swift

With `--renamings` it writes Sources/CheckpointIO/TensorRenamings+Transformers.swift instead: the
`WeightRenaming` rules of the model types in RENAMED_ON_LOAD, the families droptrace reads under the
names transformers gives their tensors: their checkpoints, as released and as transformers saves them
(it saves them back under the released names), store names only those rules turn into the modules'
names. The rules are those `get_model_conversion_mapping` collects for the class transformers loads
the model type as (AutoModelForCausalLM's, else AutoModelForImageTextToText's, else the class LOADED_AS names), built from its config
class's defaults on the meta device: the rules keyed by each sub-model's class name or model type
(LlavaOnevision15ForConditionalGeneration's are Qwen2VLForConditionalGeneration's), in the order it
applies them, a sub-model's scoped to the names under it. Each is written as transformers matches it:
the regular expression it compiles (a pattern ending in a letter or digit ends at a name boundary,
`(?!\w)`), the replacement (`\1` standing for the pattern's first group) and the name prefixes
of its scope, tried in order (none: the whole name). A `GroupWeightRename` (Kimi K2.5's vision tower's
norm0 -> norm1, norm1 -> norm2 pairs) is written apart, as the position it takes among the rules and its
pairs, the first of them its guard: transformers renames by the others only once a name read before
(names are read in sorted order) has matched the guard. The legacy rules every model gets are left out
(droptrace reads the one that matters, `model.language_model.model.`, as a placement prefix), and so
are the `WeightConverter`s: droptrace reads the tensors they convert itself (the per-expert tensors by
the table above, fused projections in their families), or never reads them (Ovis2.5's `vte`).
"""
import re
import sys

import torch
import transformers
import transformers.conversion_mapping as conversion_mapping
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText
from transformers.core_model_loading import ErnieFuseAndSplitTextVisionExperts, GroupWeightRename, LayerPairCollapse, MergeModulelist, PrefixChange, WeightConverter, WeightRenaming
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

# The model types whose tensors droptrace renames on load as transformers does (`Checkpoint`).
RENAMED_ON_LOAD = ["emu3", "deepseek_ocr2", "unlimited_ocr", "molmo2", "cosmos3_omni", "cosmos3_edge", "hy_v4_vl", "qwen2_5_omni", "qwen2_5_omni_thinker", "qwen3_omni_moe", "qwen3_omni_moe_thinker", "axk2", "deepseek_v4", "dory", "ergo", "exaone", "glm5_next", "hrm_text", "hy_v4", "hyperclovax_vision_v2", "kimi_k25", "lara_mini", "llava_onevision1_5", "minicpm5_moe", "minimax_m3_vl", "mistral_large4", "nemotron_h_omni", "ovis2_5", "param2moe", "qianfan_ocr", "sarvam_moe", "shieldgemma2", "step3p7"]

# Model types transformers loads as a class of their own that no auto class of a causal or image-text
# model maps them to: ShieldGemma2ForImageClassification (the class its checkpoints' `architectures`
# name; AutoModelForImageTextToText maps shieldgemma2 to the Gemma3ForConditionalGeneration it holds
# under `model.`, whose names are then one level shallower).
# Qwen2_5OmniForConditionalGeneration and Qwen3OmniMoeForConditionalGeneration, which only the multimodal
# and text-to-waveform auto classes map. Emu3ForConditionalGeneration: AutoModelForCausalLM maps emu3 to
# Emu3ForCausalLM, which finds none of a released checkpoint's weights (5.25 initialises them all).
LOADED_AS = {"emu3": "Emu3ForConditionalGeneration", "shieldgemma2": "ShieldGemma2ForImageClassification", "qwen2_5_omni": "Qwen2_5OmniForConditionalGeneration",
             "qwen3_omni_moe": "Qwen3OmniMoeForConditionalGeneration"}

# A collected source pattern: the module path, the expert index, one projection's weight.
PATTERN = re.compile(r"^([A-Za-z0-9_.]*)\*\.([A-Za-z0-9_]+)\.weight$")


def collected_patterns(model_type):
    """The per-expert source patterns the conversion mapping of `model_type` merges, regex escapes of
    dots undone (transformers matches them as regular expressions, a `.` standing for itself here)."""
    patterns = []
    for transform in conversion_mapping.get_checkpoint_conversion_mapping(model_type) or []:
        if not isinstance(transform, WeightConverter):
            continue
        if not any(isinstance(operation, (MergeModulelist, ErnieFuseAndSplitTextVisionExperts)) for operation in transform.operations):
            continue
        for source in transform.source_patterns:
            source = source.replace("\\.", ".")
            if not PATTERN.match(source):
                raise SystemExit(f"{model_type}: unexpected collected pattern {source!r}")
            patterns.append(source)
    return patterns


def compiled_pattern(transform, index=0):
    """The regular expression transformers compiles for source pattern `index` of `transform`."""
    compiled = transform.compiled_sources.pattern
    if isinstance(transform, GroupWeightRename):
        compiled = WeightRenaming(transform.source_patterns[index], transform.target_patterns[index]).compiled_sources.pattern
    assert compiled.startswith("(?P<g0>") and compiled.endswith(")"), compiled
    return compiled[len("(?P<g0>"):-1]


def loaded_model(model_type):
    """The model transformers loads `model_type` as (see the module's docstring), built from its config
    class's defaults."""
    if model_type in LOADED_AS:
        config = AutoConfig.for_model(model_type)
        if model_type == "qwen3_omni_moe":
            # The talker reads two keys its config classes have no default for (its sparse blocks' shared
            # expert width, its spatial_merge_size): the released configs write them.
            config.talker_config.text_config.shared_expert_intermediate_size = 768
            config.talker_config.spatial_merge_size = 2
        if model_type == "emu3":
            # Emu3Model builds its image vocabulary mapping from vocabulary_map, None by default.
            config.vocabulary_map = {}
        return getattr(transformers, LOADED_AS[model_type])(config)
    auto = AutoModelForCausalLM if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES else AutoModelForImageTextToText
    config = AutoConfig.for_model(model_type)
    text = getattr(config, "text_config", config)
    if getattr(text, "mlp_layer_types", False) is None:
        # DeepseekOcr2TextConfig leaves its mlp_layer_types None, which its decoder layers index
        # (the first layer dense, as the released configs have it).
        text.mlp_layer_types = ["dense"] + ["sparse"] * (text.num_hidden_layers - 1)
    return auto.from_config(config)


def renamings(model_type):
    """(patterns, replacements, scope prefixes) of each WeightRenaming transformers applies when it loads
    `model_type`, in order (see the module's docstring): one pattern and replacement, a GroupWeightRename's
    pairs in order."""
    with torch.device("meta"):
        model = loaded_model(model_type)
    rules = []
    for position, transform in enumerate(conversion_mapping.get_model_conversion_mapping(model, add_legacy=False)):
        if type(transform) is LayerPairCollapse and position == 0:
            continue  # `pair_collapsing`: applied before the rules, in TensorRenamings
        if isinstance(transform, WeightConverter):
            continue
        # PrefixChange only builds its pattern; other subclasses rename by code of their own.
        if type(transform) not in (WeightRenaming, PrefixChange, GroupWeightRename):
            raise SystemExit(f"{model_type}: a {type(transform).__name__} droptrace does not apply")
        assert len(transform.source_patterns) == len(transform.target_patterns), model_type
        assert len(transform.source_patterns) == 1 or type(transform) is GroupWeightRename, model_type
        patterns = [compiled_pattern(transform, i) for i in range(len(transform.source_patterns))]
        replacements = list(transform.target_patterns)
        assert all("\\" not in r.replace("\\1", "") for r in replacements), replacements
        scopes = []
        if transform.scope_prefix is not None:
            scope = f"{transform.scope_prefix}." if transform.scope_prefix else ""
            base = f"{transform.base_model_prefix}." if transform.base_model_prefix else ""
            scopes = list(dict.fromkeys([base + scope, scope]))
        rules.append((patterns, replacements, scopes))
    return rules


def kept_names(model_type):
    """Regular expressions of the names of `model_type`'s own parameters and buffers that its rules
    rename to no parameter: transformers keeps such a tensor under its stored name (`convert_and_load_state_dict_in_model`
    falls back to the original key when only that one is the model's). Layer and expert numbers read as `\\d+`."""
    with torch.device("meta"):
        model = loaded_model(model_type)
    names = set(model.state_dict().keys())
    compiled = [([re.compile(p) for p in ps], rs, c) for ps, rs, c in renamings(model_type)]
    kept = []
    for name in sorted(names):
        renamed = name
        for patterns, replacements, scopes in compiled:
            prefix = ""
            if scopes:
                scope = next((s for s in scopes if renamed.startswith(s)), None)
                if scope is None:
                    continue
                prefix = scope
            key = renamed[len(prefix):]
            # The leftmost match, the first pattern's at a tie (a group's guard taken as matched).
            matches = [(m.start(), i, m) for i, m in enumerate(p.search(key) for p in patterns) if m is not None]
            if not matches:
                continue
            _, which, match = min(matches, key=lambda found: found[:2])
            replacement = replacements[which]
            target = replacement.replace("\\1", match.group(1)) if "\\1" in replacement and match.groups() else replacement
            renamed = prefix + key.replace(match.group(0), target, 1)
        if renamed != name and renamed not in names:
            kept.append("^" + re.sub(r"\\\.\d+\\\.", r"\\.\\d+\\.", re.escape(name)) + "$")
    return list(dict.fromkeys(kept))


def swift_string(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main_renamings():
    lines = [
        "// Generated by scripts/weight_conversions/generate.py --renamings from transformers "
        f"{transformers.__version__}; do not edit.",
        "",
        "extension TensorRenamings {",
        "    /// Per model_type, transformers' `WeightRenaming` rules, in the order it applies them: each",
        "    /// (regular expression, replacement, scope) turns the first match in a stored name into the",
        "    /// replacement (`\\1` standing for the match's first group); a rule with a scope reads only the names",
        "    /// beginning with one of its prefixes (the first that does), the rest of the name after it.",
        "    static let transformers: [String: [(pattern: String, replacement: String, scope: [String])]] = [",
    ]
    for model_type in RENAMED_ON_LOAD:
        rules = renamings(model_type)
        assert rules, model_type
        lines.append(f"        {swift_string(model_type)}: [")
        lines += [f"            ({swift_string(p)}, {swift_string(r)}, [{', '.join(map(swift_string, c))}]),"
                  for [p], [r], c in (rule for rule in rules if len(rule[0]) == 1)]
        lines.append("        ],")
    lines += [
        "    ]",
        "    /// Per model_type, its `GroupWeightRename` rules: the position each takes among its rules, its",
        "    /// (regular expression, replacement) pairs in order, the first its guard, and its scope.",
        "    static let groupRules: [String: [(position: Int, pairs: [(pattern: String, replacement: String)], scope: [String])]] = [",
    ]
    for model_type in RENAMED_ON_LOAD:
        groups = [(position, rule) for position, rule in enumerate(renamings(model_type)) if len(rule[0]) > 1]
        if groups:
            lines.append(f"        {swift_string(model_type)}: [")
            lines += [f"            ({position}, [" + ", ".join(f"({swift_string(p)}, {swift_string(r)})" for p, r in zip(ps, rs))
                      + f"], [{', '.join(map(swift_string, c))}])," for position, (ps, rs, c) in groups]
            lines.append("        ],")
    lines += [
        "    ]",
        "    /// Per model_type, the names of its own parameters and buffers the rules rename to no parameter,",
        "    /// which transformers keeps as stored (regular expressions; layer and expert numbers as `\\\\d+`).",
        "    static let keptAsStored: [String: [String]] = [",
    ]
    for model_type in RENAMED_ON_LOAD:
        kept = kept_names(model_type)
        if kept:
            lines.append(f"        {swift_string(model_type)}: [" + ", ".join(map(swift_string, kept)) + "],")
    collapsing = [t for t in RENAMED_ON_LOAD
                  if type((conversion_mapping.get_checkpoint_conversion_mapping(t) or [None])[0]) is LayerPairCollapse]
    lines += [
        "    ]",
        "    /// The model types whose mapping begins with `LayerPairCollapse` (`TensorRenamings.collapsingPair`).",
        "    static let pairCollapsing: Set<String> = [" + ", ".join(swift_string(t) for t in collapsing) + "]",
        "}",
    ]
    print("\n".join(lines))


def main():
    if "--renamings" in sys.argv[1:]:
        return main_renamings()
    conversion_mapping.get_checkpoint_conversion_mapping("llama")  # builds the cache
    model_types = sorted(key for key in conversion_mapping._checkpoint_conversion_mapping_cache if key == key.lower())
    lines = [
        "// Generated by scripts/weight_conversions/generate.py from transformers "
        f"{transformers.__version__}; do not edit.",
        "",
        "extension WeightConversions {",
        "    /// Per model_type, the per-expert tensors its conversion mapping collects into fused experts",
        "    /// (`MergeModulelist` sources; `*` is the expert index). Other model types collect none.",
        "    static let collectedPerExpert: [String: [String]] = [",
    ]
    # Mappings keyed by a model class's name apply to that class whatever the model type (dots.note's
    # Dots3NoteTextModel, in its causal LM and in its wrapper): listed under its config class's model_type.
    by_class = {}
    for key in conversion_mapping._checkpoint_conversion_mapping_cache:
        config_class = getattr(getattr(transformers, key, None), "config_class", None)
        if key != key.lower() and getattr(config_class, "model_type", None) and collected_patterns(key):
            by_class.setdefault(config_class.model_type, []).extend(collected_patterns(key))
    for model_type in sorted(set(model_types) | set(by_class)):
        patterns = list(dict.fromkeys(collected_patterns(model_type) + by_class.get(model_type, [])))
        if patterns:
            lines.append(f'        "{model_type}": [' + ", ".join(f'"{p}"' for p in patterns) + "],")
    lines += ["    ]", "}"]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
