import Foundation

/// The sbatch scripts `droptrace slurm submit` writes. All sbatch options
/// go on sbatch's command line (so no path is ever parsed out of a
/// `#SBATCH` comment); each script records that command in its header.
enum BatchScript {
    /// The array script: array task i reads line i+1 of `units`
    /// (`<shard>\t<shards>\t<checkpoint dir>`) and runs `droptrace slurm task`.
    /// On USR1 (sent by `--signal=B:USR1@60` before the time limit) it
    /// passes the signal on, waits for droptrace to stop without writing a
    /// partial, and requeues its own array task, which then starts over.
    static func array(droptrace: String, pipeline: String, units: String, command: [String]) -> String {
        """
        #!/bin/bash
        # Written by `droptrace slurm submit`: one array task per (checkpoint, calibration shard).
        # Submitted with:
        #   \(commandLine(command))
        set -u
        # Lines as droptrace writes its own: UTC timestamp, level, message.
        log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $1: $2"; }
        droptrace=\(quoted(droptrace))
        pipeline=\(quoted(pipeline))
        units=\(quoted(units))
        line="$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" "$units")"
        IFS=$'\\t' read -r shard shards checkpoint <<<"$line"
        if [ -z "${checkpoint:-}" ]; then
            log error "$units: no unit for array task $SLURM_ARRAY_TASK_ID" >&2
            exit 1
        fi
        log info "array task ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} (restart ${SLURM_RESTART_COUNT:-0}): $checkpoint shard $shard of $shards"
        requeue() {
            log warning "time limit near or preempted: stopping and requeueing ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
            kill -USR1 "$pid" 2>/dev/null
            wait "$pid"
            scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
            exit 0
        }
        trap requeue USR1
        # As many threads as Slurm gave the task (--cpus-per-task), else droptrace's default.
        "$droptrace" slurm task "$pipeline" --checkpoint "$checkpoint" --shard "$shard" --shards "$shards" \\
            ${SLURM_CPUS_PER_TASK:+--threads "$SLURM_CPUS_PER_TASK"} &
        pid=$!
        wait "$pid"
        status=$?
        # A USR1 arriving while waiting runs `requeue` and never returns here.
        exit "$status"

        """
    }

    /// The finalize script: merges, analyses and reports, then leaves its
    /// exit code in `exitFile` (for `submit --wait` once Slurm has
    /// forgotten the job) — unless it deferred to a new finalize job
    /// (`FinalizeDeferral`), which runs this script again and leaves the
    /// exit code then.
    static func finalize(droptrace: String, pipeline: String, exitFile: String, command: [String]) -> String {
        """
        #!/bin/bash
        # Written by `droptrace slurm submit`: merges the finished shards into the store, analyses, reports.
        # Submitted with:
        #   \(commandLine(command))
        set -u
        \(quoted(droptrace)) slurm finalize \(quoted(pipeline))
        status=$?
        # Shard tasks were still queued: a new finalize job runs this script after them.
        if [ "$status" -eq \(FinalizeDeferral.exitCode) ]; then exit 0; fi
        echo "$status" > \(quoted(exitFile + ".tmp")) && mv -f \(quoted(exitFile + ".tmp")) \(quoted(exitFile))
        exit "$status"

        """
    }

    /// `droptrace slurm submit --dry-run`'s submit.sh: each array submitted
    /// with its job id kept in its variable (`--parsable` prints "id" or
    /// "id;cluster": the cluster is cut off), which the jobs after it name in
    /// their `--dependency` (`expansion(of:)`), then the finalize job.
    static func dryRunSubmit(arrays: [(variable: String, command: [String])], finalize: [String]) -> String {
        let lines = arrays.map { "\($0.variable)=$(\(commandLine($0.command)))\n\($0.variable)=${\($0.variable)%%;*}" }
        return """
            #!/bin/bash
            # Written by `droptrace slurm submit --dry-run`: submits the jobs that submit without
            # --dry-run would, in its order, each after the jobs it depends on. Jobs submitted by
            # hand are not recorded for `droptrace slurm status`.
            set -euo pipefail

            """ + lines.map { $0 + "\n" }.joined() + commandLine(finalize) + "\n"
    }

    /// How a command word names the job id a dry run's submit.sh keeps in `variable`.
    static func expansion(of variable: String) -> String { "${\(variable)}" }

    /// Whether `text` is a `--dependency=afterany:` option naming job ids
    /// and at least one `expansion(of:)` of a dry run's `ARRAY_<k>` variable.
    private static func isDryRunDependency(_ text: String) -> Bool {
        let prefix = "--dependency=afterany:"
        guard text.hasPrefix(prefix), text.contains("${") else { return false }
        return String(text.dropFirst(prefix.count)).components(separatedBy: ":").allSatisfy { job in
            let name = job.hasPrefix("${ARRAY_") && job.hasSuffix("}") ? job.dropFirst(8).dropLast() : Substring(job)
            return !name.isEmpty && name.allSatisfy { $0.isASCII && $0.isNumber }
        }
    }

    /// `words` as one bash command line.
    static func commandLine(_ words: [String]) -> String { words.map(quoted).joined(separator: " ") }

    /// `text` as one bash word; a dry run's `--dependency` on `expansion(of:)`
    /// variables is double-quoted, so the shell expands them.
    static func quoted(_ text: String) -> String {
        if isDryRunDependency(text) { return "\"" + text + "\"" }
        if !text.isEmpty, text.unicodeScalars.allSatisfy({ CharacterSet.alphanumerics.contains($0) && $0.isASCII || "-_./:=%@,+".unicodeScalars.contains($0) }) {
            return text
        }
        return "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }
}
