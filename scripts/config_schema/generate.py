#!/usr/bin/env python3
"""Write Sources/CheckpointIO/ConfigValueKinds+Transformers.swift: for every model_type droptrace reads, the
JSON kinds each config.json key may hold, as transformers' config class type-checks them.

transformers 5 declares its config classes as huggingface_hub `@strict` dataclasses: each field is
type-checked when the config is built, so `"head_dim": null` (Qwen3Config's `head_dim: int`),
`"num_hidden_layers": 48.0` (a float for an int) or `"attention_bias": 0` (an int for a bool) make
`from_pretrained` raise StrictDataclassFieldValidationError. This script asks each field's own
validators which kinds they accept (null, true, 3, 0.5, "x", lists of each, {}), so the table is what
the installed transformers does, not a reading of its annotations. Fields that accept every kind
(the base class's, whose annotations are strings) are left out. Keys of a class's `attribute_map`
(gpt2's `hidden_size` for `n_embd`) are not type-checked by transformers: they are set after the
fields, over them; the table lists them with the key they stand for.

A second table lists the classes whose model builds its token embedding as
`nn.Embedding(vocab_size, hidden_size, padding_idx=pad_token_id)`, found by building each model (on the
meta device) with a marked pad_token_id and reading its input embedding's padding_idx back, with the
class's default pad_token_id and vocab_size: torch asserts the index is in [-vocab_size, vocab_size),
so such a model cannot be built with a pad_token_id outside the vocabulary.

Further tables list the dropout settings each model builds `nn.Dropout` from and the classes that accept `"head_dim": null` (or `"num_key_value_heads": null`) but cannot build their model from it. A
third gives each class's defaults of the keys droptrace reads from every config that configs
in the wild omit (`rms_norm_eps`, `max_position_embeddings`, ...), which transformers then takes
(a wrapper's own text config class too, as `qwen2_vl.text_config`); another names the wrappers that
build their text config from the top level's keys when config.json has no text_config (Qwen2-VL's).

Run in a venv with the transformers version droptrace matches:
    python3 scripts/config_schema/generate.py > Sources/CheckpointIO/ConfigValueKinds+Transformers.swift
"""
import dataclasses
import json
import re
import sys
import typing
from pathlib import Path

import torch
import transformers
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

REPO = Path(__file__).resolve().parents[2]
REGISTRY = (REPO / "Sources/Architectures/ModelRegistry.swift").read_text()
MODEL_TYPES = re.findall(r'^\s*"([a-z0-9_-]+)": \w+Model\.self,', REGISTRY, re.M)

# One probe per JSON kind, as Python's json module reads it.
SCALARS = {"n": None, "b": True, "i": 3, "f": 0.5, "s": "x"}
LISTS = {"n": [None], "b": [True], "i": [3], "f": [0.5], "s": ["x"]}


def accepts(validators, value):
    for validator in validators:
        try:
            validator(value)
        except (TypeError, ValueError):
            return False
    return True


def kinds(validators):
    """Letters of the accepted kinds: n b i f s, then [elements] for lists (* within: lists as
    elements), o for objects."""
    spec = "".join(k for k, v in SCALARS.items() if accepts(validators, v))
    if accepts(validators, []):
        # "*": lists of lists are taken too (GPTNeoConfig's attention_types, a bare `list`;
        # MllamaVisionConfig's supported_aspect_ratios, lists of integers).
        nested = "*" if any(accepts(validators, [[v]]) for v in SCALARS.values()) else ""
        spec += "[" + "".join(k for k, v in LISTS.items() if accepts(validators, v)) + nested + "]"
    if accepts(validators, {}):
        spec += "o"
    return spec


EVERYTHING = ("nbifs[nbifs]o", "nbifs[nbifs*]o")

# Sub-configs other than text_config whose values are checked like the top level's: the model's own
# settings (MptConfig's attn_config), and a wrapper's vision tower (and Molmo2's adapter_config), which
# transformers builds from its config whenever it loads the model, text-only runs included.
CHECKED_SECTIONS = ["attn_config", "ffn_config", "vision_config", "adapter_config"]

# Omni models (by model_type): the sub-config holding the config of the model that runs text, whose
# text_config is the language model's (Qwen2.5-Omni's thinker_config). Their config classes build every
# sub-config, nested ones too, as a strict class whenever the model is loaded: each is checked.
OMNI_TEXT_HOLDERS = {"qwen2_5_omni": "thinker_config", "qwen3_omni_moe": "thinker_config"}
# Omni models whose own sub-configs are checked all the same, beside text_config and CHECKED_SECTIONS
# (the thinker saved on its own: Qwen2_5OmniThinkerConfig's audio_config).
OMNI_MODEL_TYPES = ["qwen2_5_omni", "qwen2_5_omni_thinker", "qwen3_omni_moe", "qwen3_omni_moe_thinker"]


def nested_sections(cls, path=""):
    """(dotted path, class) of every sub-config of `cls`, depth first, nested ones after their holder."""
    for name, sub in (getattr(cls, "sub_configs", {}) or {}).items():
        if dataclasses.is_dataclass(sub):
            yield path + name, sub
            yield from nested_sections(sub, path + name + ".")


def text_section(model_type):
    """The dotted path of the language model's config in a `model_type` config, for those whose
    text_config is not at the top level (OMNI_TEXT_HOLDERS), else None."""
    holder = OMNI_TEXT_HOLDERS.get(model_type)
    return holder + ".text_config" if holder else None


# Keys droptrace reads from every config of the families that have them, and that configs in the wild
# omit (their class's default then applies): norm epsilons and the position count.
OMITTABLE = [
    "intermediate_size", "layer_norm_eps", "layer_norm_epsilon", "max_position_embeddings", "max_seq_len", "n_positions",
    "norm_epsilon", "num_experts_per_tok", "num_key_value_heads", "num_local_experts", "rms_norm_eps",
]


def head_dim_default(cls):
    """The head width a config of `cls` that omits head_dim gets when it is the class's own number, not
    one derived from the sizes (InternLM3Config's 128 whatever hidden_size / num_attention_heads is):
    found by building the class, without head_dim, with heads half that wide. None otherwise."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    field, heads = fields.get("head_dim"), fields.get("num_attention_heads")
    if field is None or heads is None or type(field.default) is not int or type(heads.default) is not int:
        return None
    try:
        config = cls(**dense_layer(cls), hidden_size=heads.default * field.default // 2)
        # (Gemma 4's classes refuse a global head_dim: it varies per layer, and droptrace reads it so.)
        width = config.head_dim
    except Exception:
        return None
    return field.default if width == field.default else None


def dense_layer(cls):
    """Arguments making the first layer of `cls` buildable: dense when its routed layers cannot be built
    from the class's defaults (Dots1Config leaves its expert counts None), of a type when the class
    leaves its layer_types None (Lfm2MoeConfig); two layers when one fails the class's validation."""
    fields = {field.name: field for field in dataclasses.fields(cls)}
    try:
        # (GPTNeoConfig's attention_types must also expand to one layer: `one_layer`.)
        if "attention_types" not in fields:
            cls(num_hidden_layers=1)
    except Exception:
        # OlmoHybridConfig's validation wants a linear and an attention layer: its rule gives them to two.
        return {"num_hidden_layers": 2}
    if "first_k_dense_replace" in fields and "n_routed_experts" in fields and fields["n_routed_experts"].default is None:
        return {"first_k_dense_replace": 1}
    if "layer_types" in fields and cls(num_hidden_layers=1).layer_types is None:
        # Lfm2MoeConfig has no rule filling its layer_types: its model cannot be built without them.
        return {"layer_types": ["full_attention"]}
    if "mlp_layer_types" in fields and cls(num_hidden_layers=1).mlp_layer_types is None and "n_routed_experts" in fields:
        # Nor DeepseekOcr2TextConfig its mlp_layer_types, which its decoder layers index.
        return {"mlp_layer_types": ["dense"]}
    return {}


def one_layer(cls):
    """Arguments building `cls` with one layer; GPTNeoConfig also needs its attention_types to
    expand to one layer type; a class whose routed layers its defaults cannot build, a dense layer."""
    args = {"num_hidden_layers": 1, **dense_layer(cls)}
    if "attention_types" in {field.name for field in dataclasses.fields(cls)}:
        args["attention_types"] = [[["global"], 1]]
    if cls.model_type in ("zamba", "zamba2"):
        # Zamba2Config's default layer list has 54 layers and ZambaConfig's at least 3, which
        # num_hidden_layers must match.
        return {"num_hidden_layers": 1, "layers_block_type": ["linear_attention"]}
    return args


def literal_choices(annotation):
    """The values of a Literal annotation, also inside an optional one (`Literal["all", "vision"] | None`)."""
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    return tuple(c for arg in typing.get_args(annotation) for c in literal_choices(arg))


def table(cls):
    out = {}
    for field in dataclasses.fields(cls):
        validators = cls.__validators__.get(field.name, [])
        spec = kinds(validators)
        choices = literal_choices(field.type)
        if "s" not in spec and choices and all(isinstance(c, str) and accepts(validators, c) for c in choices):
            # A Literal of strings (MptAttentionConfig's attn_type; Gemma4TextConfig's
            # use_bidirectional_attention, or None) refuses the probe "x" but takes its strings:
            # the kind is a string, whose value is checked where it is read.
            scalars = spec.split("[")[0].rstrip("o")
            spec = "".join(k for k in SCALARS if k in scalars + "s") + spec[len(scalars):]
        if spec not in EVERYTHING:
            out[field.name] = spec
    return out


def auto_text_config(cls):
    """The default model_type of the `text_config` of `cls` when its class follows that model_type
    (an AutoConfig sub-config, Mistral3Config's), else None. Such a text_config is checked against the
    tables of its own model_type (the class's default when it names none), not a table of its own."""
    specs = getattr(cls, "sub_configs_defaults", {}) or {}
    spec = specs.get("text_config")
    if spec is None or issubclass(spec.config_class, transformers.PreTrainedConfig):
        return None
    return spec.model_type


def builds_text_config_from_top_level(cls):
    """Whether `cls`, given no text_config, builds its own text config class from top-level keys."""
    sub = (getattr(cls, "sub_configs", {}) or {}).get("text_config")
    if sub is None or auto_text_config(cls) is not None:
        return False
    try:
        return cls(max_position_embeddings=1234).text_config.max_position_embeddings == 1234
    except Exception:
        return False


def padded_embedding(cls):
    """(key suffix, default pad_token_id, default vocab_size) when the model of `cls` builds its token
    embedding with padding_idx = pad_token_id (of its decoder's text config), else None (also for a
    text_config checked as its own model_type: `auto_text_config`)."""
    if auto_text_config(cls) is not None:
        return None
    config = cls()
    text = config.get_text_config(decoder=True)
    # (Molmo2TextConfig has no pad_token_id: its embedding has no padding index.)
    defaults = (getattr(text, "pad_token_id", None), text.vocab_size)
    # Small enough to build quickly; a head width the class leaves to its model (Ministral's None).
    # (A heterogeneous config, Gemma 4's per_layer_config, refuses the global head_dim: its default stands.)
    if getattr(text, "_getattr_without_heterogeneous_validation", lambda k, d: getattr(text, k, d))("head_dim", 0) is None:
        text.head_dim = text.hidden_size // text.num_attention_heads
    # Likewise a key/value head count the class leaves None (NemotronConfig's), which its attention divides by.
    # (dots.note's heterogeneous config refuses the global count when its sliding layers override it.)
    read = getattr(text, "_getattr_without_heterogeneous_validation", lambda k, d: getattr(text, k, d))
    if read("num_key_value_heads", 0) is None:
        text.num_key_value_heads = text.num_attention_heads
    if text is config:
        config.num_hidden_layers = 1
        for key, value in dense_layer(cls).items():
            setattr(config, key, value)
        if hasattr(type(config), "kv_sharing_modes"):
            # Gemma 4's cache-sharing plan (transformers 5.25) refuses layer types that none of the
            # built layers has: one layer, one layer type.
            config.layer_types = config.layer_types[: config.num_hidden_layers]
            # (Gemma 3n's default shares the last 15 layers' keys and values, more than the one built.)
            if getattr(config, "num_kv_shared_layers", 0) >= config.num_hidden_layers:
                config.num_kv_shared_layers = 0
    marked = 7
    text.pad_token_id = marked
    with torch.device("meta"):
        model = causal_lm_from_config(config)
    if model.get_input_embeddings().padding_idx != marked:
        return None
    # Rows past vocab_size (MllamaTextModel's vocab_size + 8), which torch's range check counts.
    extra = model.get_input_embeddings().num_embeddings - text.vocab_size
    suffix = "" if text is config else "." + (text_section(config.model_type) or "text_config")
    return (suffix,) + defaults + (extra,)


def causal_lm_from_config(config):
    """The causal LM of `config`; a wrapper's that AutoModelForCausalLM does not map
    (CohereCompassConfig's) as AutoModelForImageTextToText builds it; Mistral4Config's
    (Mistral4ForCausalLM), which neither maps, by its class name."""
    if config.model_type == "dbrx" and not hasattr(config.attn_config, "rope_theta"):
        # DbrxAttention reads attn_config.rope_theta, which DbrxAttentionConfig does not define
        # (checkpoints write it): the class's defaults alone cannot build the model.
        config.attn_config.rope_theta = 10000.0
    text = config.get_text_config(decoder=True)
    if text.model_type == "cohere_compass_text" and not text.rope_parameters:
        # CohereCompassTextConfig's default rope_parameters ({}) has no entry per layer type, which its
        # rotary embedding reads: the class's defaults alone cannot build the model.
        text.rope_parameters = {kind: {"rope_type": "default", "rope_theta": 10000.0} for kind in set(text.layer_types)}
    if text.model_type == "qwen4_exp_text" and text.indexer_n_heads is None:
        # Qwen4ExpTextConfig leaves the QSA indexer's keys None, which its indexed attention layers
        # (every fourth by default) cannot be built from: the class's defaults alone cannot build the model.
        text.indexer_n_heads, text.indexer_kv_heads, text.indexer_head_dim = 1, 1, text.head_dim
        text.indexer_budget = text.indexer_compress_ratio = 1
    if config.model_type in ("chameleon", "emu3") and config.vocabulary_map is None:
        # ChameleonModel and Emu3Model build their image vocabulary mappings from vocabulary_map, None by default.
        config.vocabulary_map = {}
    if getattr(text, "mlp_layer_types", False) is None and hasattr(text, "n_routed_experts"):
        # DeepseekOcr2TextConfig leaves its mlp_layer_types None, which its decoder layers index.
        text.mlp_layer_types = ["dense"] * text.num_hidden_layers
    if config.model_type in OMNI_TEXT_HOLDERS:
        # Qwen2_5OmniForConditionalGeneration runs text through its thinker, whose embedding it is.
        holder = getattr(config, OMNI_TEXT_HOLDERS[config.model_type])
        return AutoModelForImageTextToText.from_config(holder)
    if config.model_type == "gemma3n":
        # Gemma3nForConditionalGeneration builds a timm vision tower; the embedding is its
        # language model's, which Gemma3nForCausalLM builds from text_config alike.
        return transformers.Gemma3nForCausalLM(text)
    if config.model_type == "emu3":
        # AutoModelForCausalLM maps Emu3Config to Emu3ForCausalLM, which reads none of the wrapper's weights.
        return transformers.Emu3ForConditionalGeneration(config)
    if config.model_type == "emu3_text_model":
        # (No auto class maps Emu3TextConfig.)
        return transformers.Emu3ForCausalLM(config)
    if config.model_type == "mllama_text_model":
        # AutoModelForCausalLM maps MllamaConfig to MllamaForCausalLM, not its text config.
        return transformers.MllamaForCausalLM(config)
    if type(config) not in AutoModelForCausalLM._model_mapping:
        if type(config) in AutoModelForImageTextToText._model_mapping:
            return AutoModelForImageTextToText.from_config(config)
        return getattr(transformers, type(config).__name__.replace("Config", "ForCausalLM"))(config)
    return AutoModelForCausalLM.from_config(config)


def null_fails(cls, key="head_dim", wrapper=None, **value):
    """Whether a model of `cls` cannot be built from a config whose `key` is null (or absent, when
    no value is given) while the class accepts the null: classes without a head_dim field keep
    the None as an attribute, which their attention and rotary set-up read in place of
    hidden_size / num_attention_heads; Ministral's field defaults to None; Qwen2MoeConfig keeps a
    null num_key_value_heads, which its attention divides by. With `wrapper`, `cls` is that
    wrapper's own text config class (Glm4vMoeTextConfig), asked about in the wrapper's model."""
    if key in {field.name: field for field in dataclasses.fields(cls)} and not accepts(
            cls.__validators__.get(key, []), None):
        return False  # refused as a kind already
    if getattr(cls, "sub_configs", {}).get("text_config"):
        return False
    fields = {field.name: field for field in dataclasses.fields(cls)}
    if key != "num_key_value_heads" and "num_key_value_heads" in fields and fields["num_key_value_heads"].default is None:
        # NemotronConfig leaves it None, which its attention divides by: written, so that `key` alone is asked about.
        value = {"num_key_value_heads": cls(**one_layer(cls)).num_attention_heads, **value}

    def fails(**sizes):
        try:
            if wrapper is None:
                config = cls(**one_layer(cls), **sizes, **value)
            else:
                config = wrapper(text_config={**one_layer(cls), **sizes, **value})
            with torch.device("meta"):
                causal_lm_from_config(config)
        except (TypeError, ValueError, AttributeError):
            # AttributeError: FalconConfig's head_dim is a property, which a given value cannot set.
            return True
        return False

    try:
        failed = fails()
    except StrictDataclassError:
        # A class validator refuses the default sizes' head width hidden_size /
        # num_attention_heads (SeedOssConfig's 4096 / 80: odd, which the rotary check
        # refuses): asked again with an even width.
        try:
            return fails(hidden_size=256, num_attention_heads=4)
        except StrictDataclassError:
            return True
    if failed and key != "head_dim" and "head_dim" in {field.name for field in dataclasses.fields(cls)}:
        # The class's default head_dim may be what fails (HunYuanDenseV1Config's None, which its
        # attention reads as the width), not the null `key`: asked again with the width written.
        defaults = cls(**one_layer(cls))
        if defaults.head_dim is None:
            return fails(head_dim=defaults.hidden_size // defaults.num_attention_heads)
    return failed


def head_width_classes(classes):
    """The registered model types' config classes and the wrappers' own text config classes
    (`glm4v_moe.text_config`, with its wrapper), as the head-width tables key them."""
    for key, cls in classes:
        if "." not in key:
            if key not in OMNI_TEXT_HOLDERS:  # (its text config is asked about under its own key)
                yield key, cls, None
        elif key.endswith(".text_config"):
            model_type, _, holder = key.removesuffix(".text_config").partition(".")
            if holder:
                # A nested text config (Qwen2.5-Omni's thinker_config.text_config), built inside its holder.
                yield key, cls, lambda text_config, model_type=model_type, holder=holder: CONFIG_MAPPING[model_type](
                    **{holder: {"text_config": text_config}})
            else:
                yield key, cls, CONFIG_MAPPING[model_type]


def head_dim_none(cls, given):
    """Whether a config of `cls` built with `given` (nothing, or a null head_dim) has head_dim None,
    as an attribute (classes without the field keep a given null as one)."""
    if getattr(cls, "sub_configs", {}).get("text_config"):
        return False
    if "head_dim" not in {f.name for f in dataclasses.fields(cls)} and not given:
        return False
    try:
        config = cls(**one_layer(cls), **given)
    except Exception:
        return False  # refused as a kind already
    # A heterogeneous config (Gemma 4's per_layer_config) refuses the global head_dim: read it anyway.
    read = getattr(config, "_getattr_without_heterogeneous_validation", lambda key, default: getattr(config, key, default))
    return read("head_dim", 0) is None


def dropout_modules(cls):
    """The dropout settings of `cls` its model builds `nn.Dropout` from (torch refuses a probability
    outside [0, 1] there), found by building the model with each set to 1.5."""
    if getattr(cls, "sub_configs", {}).get("text_config"):
        return []
    found = []
    for field in dataclasses.fields(cls):
        if "dropout" not in field.name and "pdrop" not in field.name:
            continue
        # A head width the class leaves to its model (Ministral's None), as in padded_embedding.
        fields = {f.name: f for f in dataclasses.fields(cls)}
        head_dim = {"head_dim": 64} if "head_dim" in fields else {}
        # And a key/value head count it leaves None (NemotronConfig's).
        if "num_key_value_heads" in fields and fields["num_key_value_heads"].default is None:
            head_dim["num_key_value_heads"] = cls().num_attention_heads
        try:
            config = cls(**one_layer(cls), **head_dim, **{field.name: 1.5})
            with torch.device("meta"):
                causal_lm_from_config(config)
        except ValueError as error:
            if "dropout probability" in str(error):
                found.append(field.name)
    return found


def derived_per_layer_lists(cls):
    """The list fields a default instance of `cls` holds with one entry per layer (a list naming every
    layer by index, Molmo2's `rope_scaling_layers`, is a list of layer indices, not one per layer)."""
    try:
        config = cls()
    except Exception:
        return []
    layers = getattr(config, "num_hidden_layers", None)
    if not isinstance(layers, int) or layers < 2:
        return []
    return sorted(name for name, value in vars(config).items()
                  if isinstance(value, list) and len(value) == layers and value != list(range(layers)))


def main():
    lines = [
        "// Generated by scripts/config_schema/generate.py from transformers "
        f"{transformers.__version__}; do not edit.",
        "",
        "extension ConfigValueKinds {",
        "    /// Per config class (by model_type): the kinds each key may hold, as its strict dataclass",
        "    /// fields type-check them. Keys not listed take any value.",
        "    static let transformers: [String: (className: String, keys: [String: String], aliases: [String: String])] = [",
    ]
    seen = set()
    classes = []
    for model_type in MODEL_TYPES:
        classes.append((model_type, CONFIG_MAPPING[model_type]))
        sub = getattr(CONFIG_MAPPING[model_type], "sub_configs", {}) or {}
        if "text_config" in sub and auto_text_config(CONFIG_MAPPING[model_type]) is None:
            classes.append((model_type + ".text_config", sub["text_config"]))
        # Sections of the model's own settings, built as strict config classes too (MptConfig's attn_config).
        for section in CHECKED_SECTIONS:
            # (A sub-config built by AutoConfig from its own model_type, LlavaConfig's vision_config, is not checked.)
            if section in sub and dataclasses.is_dataclass(sub[section]):
                classes.append((model_type + "." + section, sub[section]))
        if model_type in OMNI_MODEL_TYPES:
            classes += [(model_type + "." + path, cls) for path, cls in nested_sections(CONFIG_MAPPING[model_type])]
    # (An omni thinker's text_config and vision_config are listed above already.)
    classes = list({key: (key, cls) for key, cls in reversed(classes)}.values())[::-1]
    for key, cls in classes:
        if key in seen:
            continue
        seen.add(key)
        entries = table(cls)
        lines.append(f'        "{key}": (')
        lines.append(f'            "{cls.__name__}",')
        lines.append("            [")
        for name in sorted(entries):
            lines.append(f'                "{name}": "{entries[name]}",')
        lines.append("            ],")
        aliases = getattr(cls, "attribute_map", {}) or {}
        lines.append("            [" + ("" if aliases else ":"))
        for alias in sorted(aliases):
            lines.append(f'                "{alias}": "{aliases[alias]}",')
        lines.append("            ]),")
    lines += [
        "    ]",
        "",
        "    /// Per config class (by model_type) whose `text_config` is built by its own `model_type` (an",
        "    /// AutoConfig): the model_type it takes when it names none. It is checked against that type's tables.",
        "    static let textConfigModelTypes: [String: String] = [",
    ]
    for model_type in MODEL_TYPES:
        default = auto_text_config(CONFIG_MAPPING[model_type])
        if default is not None:
            lines.append(f'        "{model_type}": "{default}",')
    lines += [
        "    ]",
        "",
        "    /// Per config class (by model_type) whose `text_config` is a config class of its own: that class's",
        "    /// model_type, which its text model reports when `text_config` names none.",
        "    static let ownTextConfigModelTypes: [String: String] = [",
    ]
    for model_type in MODEL_TYPES:
        sub = (getattr(CONFIG_MAPPING[model_type], "sub_configs", {}) or {}).get("text_config")
        if sub is not None and auto_text_config(CONFIG_MAPPING[model_type]) is None:
            lines.append(f'        "{model_type}": "{sub.model_type}",')
    lines += [
        "    ]",
        "",
        "    /// Config classes (by model_type) that build their text config from the top level's keys when",
        "    /// config.json has no `text_config` (Qwen2VLConfig's backward compatibility with flat configs).",
        "    static let flatTextConfigs: Set<String> = [",
    ]
    for model_type in MODEL_TYPES:
        if builds_text_config_from_top_level(CONFIG_MAPPING[model_type]):
            lines.append(f'        "{model_type}",')
    lines += [
        "    ]",
        "",
        "    /// Per omni config class (by model_type): the dotted paths of its sub-configs, nested ones too,",
        "    /// each checked against its own class's table (`<model_type>.<path>`), beside `text_config` and the",
        "    /// sections checked for every class.",
        "    static let nestedSections: [String: [String]] = [",
    ]
    for model_type in MODEL_TYPES:
        if model_type in OMNI_MODEL_TYPES:
            paths = [path for path, _ in nested_sections(CONFIG_MAPPING[model_type])
                     if path != "text_config" and path not in CHECKED_SECTIONS]
            lines.append(f'        "{model_type}": [' + ", ".join(f'"{path}"' for path in paths) + "],")
    lines += [
        "    ]",
        "",
        "    /// Per omni config class (by model_type) whose language model's config is nested: its dotted path.",
        "    static let nestedTextConfigs: [String: String] = [",
    ]
    for model_type in MODEL_TYPES:
        if text_section(model_type):
            lines.append(f'        "{model_type}": "{text_section(model_type)}",')
    lines += [
        "    ]",
        "",
        "    /// The names of torch's dtypes (`getattr(torch, name)` is a torch.dtype): the strings a text",
        "    /// config's `dtype` may hold, which its config class converts by that name.",
        "    static let torchDtypeNames: Set<String> = [",
    ]
    for name in sorted(n for n in dir(torch) if isinstance(getattr(torch, n, None), torch.dtype)):
        lines.append(f'        "{name}",')
    lines += [
        "    ]",
        "",
        "    /// Config classes (by model_type) whose `tie_word_embeddings` is true when config.json omits it.",
        "    static let tiedByDefault: Set<String> = [",
    ]
    for model_type in MODEL_TYPES:
        if getattr(CONFIG_MAPPING[model_type](), "tie_word_embeddings", False) is True:
            lines.append(f'        "{model_type}",')
    lines += [
        "    ]",
        "",
        "    /// Per config class (as above) whose model builds its token embedding with padding_idx =",
        "    /// pad_token_id: the class's default pad_token_id and vocab_size.",
        "    static let paddedEmbeddings: [String: (padTokenID: Int?, vocabSize: Int)] = [",
    ]
    extra_rows = []
    for model_type in MODEL_TYPES:
        padded = padded_embedding(CONFIG_MAPPING[model_type])
        if padded is not None:
            suffix, pad, vocab, extra = padded
            lines.append(f'        "{model_type}{suffix}": ({"nil" if pad is None else pad}, {vocab}),')
            if extra:
                extra_rows.append(f'        "{model_type}{suffix}": {extra},')
    lines += [
        "    ]",
        "",
        "    /// Per config class (as above) whose model's padded embedding has rows past vocab_size:",
        "    /// how many (MllamaTextModel's vocab_size + 8), which torch's padding_idx range counts.",
        "    static let embeddingRowsPastVocabulary: [String: Int] = [",
    ] + (extra_rows or ["        :"]) + [
        "    ]",
        "",
        "    /// Per config class (by model_type): the defaults of the keys below, which droptrace reads",
        "    /// from every config and a config may omit, as JSON text (the class's dataclass defaults).",
        "    static let omittedDefaults: [String: [String: String]] = [",
    ]
    # Wrappers' own text config classes too (`qwen2_vl.text_config`), whose keys a family reads from
    # the text_config section; of an omni model's, its language model's alone (not its talker's).
    for key, cls in classes:
        model_type, _, section = key.partition(".")
        if section and section != "text_config" and section != text_section(model_type):
            continue
        fields = {f.name: f for f in dataclasses.fields(cls)}
        # A field its attribute map reads as another key (BailingHybridConfig's num_local_experts as
        # num_experts) stores its default there, where a config saved by transformers writes it.
        # Where that key is a field of its own, declared after (Step3p7TextConfig's n_routed_experts), the
        # class sets it after the aliased field: its own default replaces the aliased one.
        stored = getattr(cls, "attribute_map", {})
        order = list(fields)

        def stored_default(key):
            target = stored.get(key, key)
            if target != key and target in fields and order.index(target) > order.index(key):
                return fields[target].default
            return fields[key].default

        defaults = {
            stored.get(key, key): json.dumps(stored_default(key))
            for key in OMITTABLE
            if key in fields and isinstance(stored_default(key), (int, float)) and not isinstance(stored_default(key), bool)
        }
        width = head_dim_default(cls)
        if width is not None:
            defaults["head_dim"] = json.dumps(width)
        if defaults:
            body = ", ".join(f'"{name}": "{defaults[name]}"' for name in sorted(defaults))
            lines.append(f'        "{key}": [{body}],')
    lines += [
        "    ]",
        "",
        "    /// Per config class (by model_type): the dropout settings its model builds `nn.Dropout` from.",
        "    static let dropoutModules: [String: [String]] = [",
    ]
    for model_type in MODEL_TYPES:
        found = dropout_modules(CONFIG_MAPPING[model_type])
        if found:
            lines.append(f'        "{model_type}": [' + ", ".join(f'"{name}"' for name in sorted(found)) + "],")
    lines += [
        "    ]",
        "",
        "    /// Config classes (by model_type) that accept `\"head_dim\": null` but whose model cannot be built",
        "    /// from it (the None is read as the head width).",
        "    static let nullHeadDimFails: Set<String> = [",
    ]
    for key, cls, wrapper in head_width_classes(classes):
        if null_fails(cls, wrapper=wrapper, head_dim=None):
            lines.append(f'        "{key}",')
    lines += [
        "    ]",
        "",
        "    /// Those of them whose model cannot be built when config.json has no `head_dim` either.",
        "    static let absentHeadDimFails: Set<String> = [",
    ]
    for key, cls, wrapper in head_width_classes(classes):
        if null_fails(cls, wrapper=wrapper):
            lines.append(f'        "{key}",')
    lines += [
        "    ]",
        "",
        "    /// Config classes (by model_type) whose `head_dim` is None when config.json omits it, and those",
        "    /// whose `head_dim` stays None when config.json writes null: the rotary initialisers that read it",
        "    /// with getattr's default (dynamic, YaRN, LongRoPE) then fail.",
    ]
    for name, given in [("headDimNoneWhenAbsent", {}), ("headDimNoneWhenNull", {"head_dim": None})]:
        lines.append(f"    static let {name}: Set<String> = [")
        for key, cls, _ in head_width_classes(classes):
            if head_dim_none(cls, given):
                lines.append(f'        "{key}",')
        lines += ["    ]"]
    lines += [
        "",
        "    /// Config classes (by model_type) that accept `\"num_key_value_heads\": null` but whose model cannot",
        "    /// be built from it.",
        "    static let nullKeyValueHeadsFail: Set<String> = [",
    ]
    for key, cls, wrapper in head_width_classes(classes):
        if null_fails(cls, "num_key_value_heads", wrapper=wrapper, num_key_value_heads=None):
            lines.append(f'        "{key}",')
    lines += [
        "    ]",
        "",
        "    /// Per config class (as above) that holds these per-layer lists (one entry per layer) when",
        "    /// config.json has none, derived from a rule, and so writes them back on saving.",
        "    static let derivedPerLayerLists: [String: [String]] = [",
    ]
    for key, cls in classes:
        derived = derived_per_layer_lists(cls)
        if derived:
            lines.append(f'        "{key}": [' + ", ".join(f'"{name}"' for name in derived) + "],")
    lines += ["    ]", "}", ""]
    sys.stdout.write("\n".join(lines))


if __name__ == "__main__":
    main()
