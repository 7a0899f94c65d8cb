import ArgumentParser
import Foundation
import Pipeline

struct ResealCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reseal",
        abstract: "Accept a store changed outside droptrace as it now is (renew its checksum).",
        discussion: """
            Every store droptrace writes begins with a checksum of the rest, and a store whose bytes no longer \
            match it is refused as damaged: a flipped bit or a bad copy would otherwise give numbers no run \
            computed. Opening the store with h5py in append mode ('a', 'r+') changes bytes too, even when nothing \
            is written, as does adding an attribute. If you made such a change, `reseal` checks that the store \
            still reads completely (rows, analysis, perplexities, task accuracy, through the crash-safe probe) \
            and renews the checksum, atomically; nothing else changes. A later `trace` that stores a checkpoint \
            rewrites the store with droptrace's own contents; when you added something at its root (a group, \
            dataset, link or attribute), it first keeps the store as it was beside it \
            (scores.h5.additions-<UTC time>) and says so.

            Example:
              droptrace reseal runs/out

            Exit codes: 0 resealed (or no checksum to renew); 1 the store does not read, one line naming it; \
            64 invalid usage; 75 another run holds the lock.
            """
    )

    @Argument(help: "An output directory of trace or run (its scores.h5, under its lock), or a store file (a symbolic link is followed).")
    var target: String

    func run() throws {
        try runLocked { log in
            let (store, resealed) = try StoreReseal.run(URL(commandLinePath: target))
            log.info(resealed ? "resealed \(store.path)" : "\(store.path) has no checksum to renew: it is read as it is")
        }
    }
}
