// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "droptrace",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "droptrace", targets: ["droptrace"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
    ],
    targets: [
        // C libraries from Debian: libopenblas-dev, libdnnl-dev (oneDNN), libhdf5-dev, libicu-dev.
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS"),
        .systemLibrary(name: "CDNNL", path: "Sources/CDNNL"),
        // oneDNN's sgemm and bf16 matmul, single-threaded per calling thread.
        .target(name: "CDNNLMatmul", dependencies: ["CDNNL"], linkerSettings: [.linkedLibrary("dnnl")]),
        // CPUID, XCR0 and Linux's AMX permission, for choosing matrix kernels.
        .target(name: "CCPUFeatures"),
        // The engine's elementwise and reduction loops, compiled per instruction-set level.
        .target(name: "CVectorKernels", cSettings: [.unsafeFlags(["-O3"])]),
        .systemLibrary(name: "CHDF5", path: "Sources/CHDF5"),
        // Reads an HDF5 file in a forked child, so libhdf5's crashes on crafted metadata stay there.
        .target(name: "CHDF5Probe", dependencies: ["CHDF5"]),
        // ICU's regex engine with a step budget (libicu-dev), for tokenizer.json regexes.
        .target(name: "CICURegex", linkerSettings: [.linkedLibrary("icui18n"), .linkedLibrary("icuuc")]),

        // Errors and small shared helpers.
        .target(name: "DroptraceSupport"),
        // Reading checkpoints: safetensors (single and sharded), config.json.
        .target(name: "CheckpointIO", dependencies: ["DroptraceSupport"]),
        // tokenizer.json (byte-level BPE) and calibration sets.
        .target(
            name: "Tokenization",
            dependencies: ["CICURegex", "DroptraceSupport", .product(name: "Crypto", package: "swift-crypto")]
        ),
        // Float32 (and bfloat16) tensor kernels on top of oneDNN and OpenBLAS, chosen by CPU features.
        .target(name: "TensorEngine", dependencies: ["CBLAS", "CDNNL", "CDNNLMatmul", "CCPUFeatures", "CVectorKernels", "DroptraceSupport"]),
        // One file per transformer family, layer-by-layer forward passes.
        .target(name: "Architectures", dependencies: ["CheckpointIO", "TensorEngine", "DroptraceSupport"]),
        // LLM-Drop module importance from one pass.
        .target(name: "Scoring", dependencies: ["Architectures", "CheckpointIO", "TensorEngine", "Tokenization", "DroptraceSupport"]),
        // LLM-Drop's dropping: selection, perplexity, task accuracy, speed, export.
        .target(
            name: "Dropping",
            dependencies: [
                "Scoring", "Architectures", "CheckpointIO", "TensorEngine", "Tokenization", "Evaluation", "DroptraceSupport",
            ]
        ),
        // lm-evaluation-harness tasks (HellaSwag, ARC, PIQA, WinoGrande, BoolQ, OpenBookQA, MMLU) from local files.
        .target(
            name: "Evaluation",
            dependencies: ["Architectures", "CheckpointIO", "Scoring", "TensorEngine", "Tokenization", "DroptraceSupport"]
        ),
        // The HDF5 score store (public file layout).
        .target(name: "ScoreStore", dependencies: ["CHDF5", "CHDF5Probe", "CheckpointIO", "DroptraceSupport", .product(name: "Crypto", package: "swift-crypto")]),
        // Series analysis: rankings, drop-k sets, rank correlations, verdict.
        .target(name: "Analysis", dependencies: ["ScoreStore", "DroptraceSupport"]),
        // Markdown reports with SVG figures.
        .target(name: "Reporting", dependencies: ["Analysis", "ScoreStore", "DroptraceSupport"]),
        // The series pipeline: discover, score, analyze, report; pipeline files.
        .target(
            name: "Pipeline",
            dependencies: [
                "Scoring", "ScoreStore", "CheckpointIO", "Architectures", "Analysis", "Reporting", "Dropping",
                "Evaluation", "Tokenization", "DroptraceSupport",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        // Slurm: job arrays over checkpoints and calibration shards, their status.
        .target(
            name: "Cluster",
            dependencies: [
                "Pipeline", "ScoreStore", "DroptraceSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // The command-line tool, thin on top.
        .executableTarget(
            name: "droptrace",
            dependencies: [
                "Scoring", "ScoreStore", "CheckpointIO", "Tokenization", "Analysis", "Reporting", "Pipeline",
                "Dropping", "Evaluation", "Cluster", "DroptraceSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "DroptraceTests",
            dependencies: [
                "Scoring", "ScoreStore", "CheckpointIO", "Tokenization", "Architectures", "Analysis",
                "Reporting", "Pipeline", "Dropping", "Evaluation", "Cluster", "DroptraceSupport", "TensorEngine",
                .product(name: "Logging", package: "swift-log"),
            ],
            resources: [.copy("Fixtures")]
        ),
    ],
    // The engine hands raw buffers to worker threads by design; Swift 5 mode
    // keeps that readable without wrapping every pointer in a Sendable box.
    swiftLanguageModes: [.v5],
)

// The format fuzzer (fuzz/README.md), built only when asked:
// DROPTRACE_FUZZ=1 swift build -c release --product droptrace-fuzz --scratch-path .build-fuzz
if Context.environment["DROPTRACE_FUZZ"] != nil {
    package.products.append(.executable(name: "droptrace-fuzz", targets: ["droptrace-fuzz"]))
    package.targets.append(.executableTarget(
        name: "droptrace-fuzz", dependencies: ["CheckpointIO", "Tokenization", "Architectures", "Scoring", "Pipeline", "DroptraceSupport"],
        path: "fuzz/Sources/droptrace-fuzz"))
}
