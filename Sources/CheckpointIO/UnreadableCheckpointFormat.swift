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
            var isDirectory: ObjCBool = false
            guard files.fileExists(atPath: directory.appendingPathComponent(name).path, isDirectory: &isDirectory),
                  isDirectory.boolValue
            else { continue }
            let inner = (try? files.contentsOfDirectory(atPath: directory.appendingPathComponent(name).path)) ?? []
            nested += inner.sorted().map { "\(name)/\($0)" }
        }
        let all = top + nested
        let path = directory.path
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
        return nil
    }

    private static func isDistributedCheckpointShard(_ relativePath: String) -> Bool {
        relativePath.hasSuffix(".distcp")
    }

    private static func isDeepSpeedShard(_ relativePath: String) -> Bool {
        let name = (relativePath as NSString).lastPathComponent
        return name.hasSuffix("_model_states.pt") || name.hasSuffix("_optim_states.pt")
    }
}
