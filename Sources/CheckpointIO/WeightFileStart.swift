import DroptraceSupport
import Foundation

/// Tells a weight file that is corrupt from one that is only unfinished,
/// from its first bytes alone: writers emit a file front to back, so bytes
/// that are already there and wrong will never become right by waiting.
public enum WeightFileStart {
    /// Why the bytes at the start of `url` cannot begin a `format` file, or
    /// nil when they can (or the file is too short to tell). Checked before
    /// `expectedLength`, whose "complete" for a header that cannot be parsed
    /// would otherwise only show when the checkpoint is opened.
    public static func corruption(of url: URL, format: WeightFormat) -> String? {
        guard let file = try? RegularFile(path: url.path),
              let bytes = try? file.bytes(min(9, file.size), at: 0)
        else { return nil }
        switch format {
        case .safetensors:
            guard bytes.count >= 8 else { return nil }
            let headerLength = bytes[0..<8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            // The bound SafetensorsFile sets on a header; a complete header
            // that does not parse is refused when the file is opened.
            guard headerLength >= 2, headerLength <= UInt64(SafetensorsFile.formatHeaderLimit) else {
                return "declares a header of \(headerLength) bytes, which no safetensors writer produces"
            }
            return bytes.count == 9 && bytes[8] != UInt8(ascii: "{") ? "has a header that is not a JSON object" : nil
        case .gguf:
            guard bytes.count >= 4 else { return nil }
            return bytes[0..<4].elementsEqual("GGUF".utf8) ? nil : "does not start with the GGUF magic"
        case .pytorch:
            guard bytes.count >= 4 else { return nil }
            return ZipArchive.looksLikeZip(bytes) || LegacyTorchFile.looksLegacy(bytes) ? nil : "is neither a zip archive nor a legacy torch.save file"
        }
    }
}
