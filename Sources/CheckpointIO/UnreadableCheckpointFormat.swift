import DroptraceSupport
import Foundation

/// Sharded training-state layouts that distributed trainers write and
/// droptrace cannot read, recognised by their file names. A finished
/// checkpoint in one of them never becomes readable by waiting, so it is
/// reported with the conversion that turns it into `model.safetensors` —
/// not taken for one still being written.
///
/// - FSDP's sharded state dict (Accelerate's `pytorch_model_fsdp_<i>/`
///   holding `__<rank>_<i>.distcp` files; plain `torch.distributed.checkpoint`
///   `*.distcp`; per-rank `pytorch_model_fsdp_rank<r>.bin`).
/// - DeepSpeed ZeRO shards (`global_step<N>/` holding
///   `zero_pp_rank_<r>_mp_rank_<m>_model_states.pt`, `*_optim_states.pt`,
///   `mp_rank_<m>_model_states.pt`).
/// - accelerate's FSDP full state dict (`pytorch_model_fsdp.bin`); Meta's
///   original Llama format (`consolidated.<i>.pth`, `params.json`).
/// - A PEFT adapter (`adapter_config.json`, `adapter_model.safetensors` or
///   `.bin`) without the base model's weights: what the Trainer and TRL save
///   in `checkpoint-<N>/` when training LoRA, with no config.json.
public enum UnreadableCheckpointFormat {
    /// What `directory` (a checkpoint directory) holds and how to make it
    /// readable, one line; nil when it holds none of these layouts. Looks at
    /// file names only, in the directory and its immediate subdirectories.
    public static func diagnose(_ directory: URL) -> String? {
        let files = FileManager.default
        let top = ((try? files.contentsOfDirectory(atPath: directory.path)) ?? []).sorted()
        // Relative paths of the files one level down, e.g. "global_step100/mp_rank_00_model_states.pt".
        var nested: [String] = []
        for name in top {
            guard PathKind.of(directory.appendingPathComponent(name)) == .directory else { continue }
            let inner = (try? files.contentsOfDirectory(atPath: directory.appendingPathComponent(name).path)) ?? []
            nested += inner.sorted().map { "\(name)/\($0)" }
        }
        let all = top + nested
        let path = directory.path
        // Checked first: under DeepSpeed a LoRA run's checkpoint also holds
        // ZeRO shards, but the adapter is all of the model it saved.
        if let adapter = peftAdapter(directory, names: top) { return adapter }
        if let shard = all.first(where: { isDistributedCheckpointShard($0) }) {
            if let folder = top.first(where: { $0.hasPrefix("pytorch_model_fsdp_") && shard.hasPrefix("\($0)/") }) {
                return "holds an FSDP sharded state dict (\(shard)), which droptrace cannot read; merge it into "
                    + "model.safetensors with `accelerate merge-weights \(path)/\(folder) \(path)` (config.json stays beside it)"
            }
            return "holds a torch.distributed.checkpoint (FSDP) sharded state dict (\(shard)), which droptrace cannot read; "
                + "convert it with `python -m torch.distributed.checkpoint.format_utils dcp_to_torch \(path) \(path)/pytorch_model.bin`"
        }
        if let shard = all.first(where: { ($0 as NSString).lastPathComponent.hasPrefix("pytorch_model_fsdp_rank") }) {
            return "holds per-rank FSDP shards (\(shard)), which droptrace cannot read; save the model with "
                + "`fsdp_state_dict_type: FULL_STATE_DICT`, or as a SHARDED_STATE_DICT and merge it with `accelerate merge-weights`"
        }
        if let shard = all.first(where: { isDeepSpeedShard($0) }) {
            let name = directory.lastPathComponent
            // DeepSpeed's own save_checkpoint writes global_step<N>/ beside `latest` and zero_to_fp32.py;
            // the Trainer writes global_step<N>/ inside checkpoint-<N>/, with zero_to_fp32.py beside it.
            let command = name.hasPrefix("global_step")
                ? "python \(directory.deletingLastPathComponent().path)/zero_to_fp32.py \(directory.deletingLastPathComponent().path) OUT_DIR -t \(name) --safe_serialization"
                : "python \(path)/zero_to_fp32.py \(path) \(path) --safe_serialization"
            return "holds DeepSpeed ZeRO shards (\(shard)), which droptrace cannot read; consolidate them into "
                + "model.safetensors with DeepSpeed's zero_to_fp32.py: `\(command)` (config.json must be beside the result)"
        }
        if top.contains("pytorch_model_fsdp.bin") {
            return "holds accelerate's FSDP state dict (pytorch_model_fsdp.bin), a file transformers does not load as a "
                + "model; save the model with `save_pretrained` (accelerate's `save_model`) to write model.safetensors"
        }
        if let consolidated = top.first(where: { $0.hasPrefix("consolidated.") && $0.hasSuffix(".pth") }), top.contains("params.json") {
            return "holds Meta's original checkpoint format (\(consolidated), params.json), which droptrace cannot read; "
                + "convert it with transformers' convert_llama_weights_to_hf.py"
        }
        return nil
    }

    /// What a series directory holding no checkpoint directories holds
    /// instead, one line; nil when none of these: a trainer's own checkpoint
    /// files, which never become Hugging Face checkpoints by waiting (a cron
    /// run would say "no checkpoints yet" for ever). File names only:
    /// PyTorch Lightning's `*.ckpt` files; Megatron-LM's `iter_<N>/`
    /// directories (with `latest_checkpointed_iteration.txt`).
    public static func diagnoseSeries(_ seriesDirectory: URL) -> String? {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: seriesDirectory.path)) ?? []).sorted()
        let needed = "droptrace reads Hugging Face checkpoints, one directory per step holding config.json and the weights "
            + "(model.safetensors), as `save_pretrained` writes them"
        let lightning = names.filter { $0.hasSuffix(".ckpt") }
        if !lightning.isEmpty {
            return "holds PyTorch Lightning checkpoint files (\(lightning.shownInMessage())), which droptrace cannot read; \(needed): "
                + "save the model with `save_pretrained` in a callback at each checkpoint, into checkpoint-<step>/"
        }
        let megatron = names.filter { $0.hasPrefix("iter_") && $0.count > 5 && $0.dropFirst(5).allSatisfy { ("0"..."9").contains($0) } }
        if !megatron.isEmpty || names.contains("latest_checkpointed_iteration.txt") {
            let found = megatron.isEmpty ? ["latest_checkpointed_iteration.txt"] : megatron
            return "holds Megatron-LM checkpoints (\(found.shownInMessage())), which droptrace cannot read; \(needed): convert each "
                + "iteration to one (Megatron-Bridge, or Megatron-LM's checkpoint converter), into checkpoint-<iteration>/"
        }
        return nil
    }

    /// What a directory holding a PEFT adapter holds, and how to merge it,
    /// one line; nil when it holds none. Without the model's weights such a
    /// directory is finished (it never gets a config.json or full weights),
    /// so it must not be taken for a checkpoint still being written. Beside
    /// the model's weights, the adapter is still part of the model: with
    /// peft installed, transformers' `from_pretrained` finds
    /// adapter_config.json, loads the base model it names and applies the
    /// adapter, so the weights alone are not the model it runs.
    public static func peftAdapter(_ directory: URL) -> String? {
        peftAdapter(directory, names: (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [])
    }

    private static func peftAdapter(_ directory: URL, names: [String]) -> String? {
        let weights = names.filter { $0.hasPrefix("adapter_model") }.sorted()
        guard names.contains("adapter_config.json") || !weights.isEmpty else { return nil }
        let found = weights.first ?? "adapter_config.json"
        // transformers loads such a directory only by fetching the base model
        // adapter_config.json names; droptrace scores the weights it is given.
        var base = ""
        if let data = try? RegularFile.contents(path: directory.appendingPathComponent("adapter_config.json").path, limit: 1 << 20),
           case .string(let name)? = (try? JSONValue.parse([UInt8](data)))?.member("base_model_name_or_path"), !name.isEmpty {
            base = " (\"\(name.forErrorMessage)\" in adapter_config.json)"
        }
        let merge = "merge it into its base model\(base) with peft's `PeftModel.from_pretrained(base, \(directory.path)).merge_and_unload()` "
            + "and save the result with `save_pretrained` (model.safetensors and config.json)"
        if let model = names.sorted().first(where: { !$0.hasPrefix("adapter_model") && CheckpointLayout.isWeightFileName($0) }) {
            return "holds a PEFT adapter (\(found)) beside model weights (\(model)): transformers with peft loads the base model "
                + "adapter_config.json names and applies the adapter, so these weights alone are not the model it runs; "
                + merge + ", or move the adapter's files out to score the weights alone"
        }
        return "holds a PEFT adapter (\(found)) without the model's weights, which droptrace cannot score; " + merge
    }


    private static func isDistributedCheckpointShard(_ relativePath: String) -> Bool {
        relativePath.hasSuffix(".distcp")
    }

    private static func isDeepSpeedShard(_ relativePath: String) -> Bool {
        let name = (relativePath as NSString).lastPathComponent
        return name.hasSuffix("_model_states.pt") || name.hasSuffix("_optim_states.pt")
    }
}
