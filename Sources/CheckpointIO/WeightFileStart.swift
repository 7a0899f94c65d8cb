import DroptraceSupport
import Foundation

/// Tells a weight file that is corrupt from one that is only unfinished,
/// from its first bytes alone: writers emit a file front to back, so bytes
/// that are already there and wrong will never become right by waiting.
public enum WeightFileStart {
    /// Why the bytes at the start of `url` cannot begin a `format` file, or
    /// nil when they can (or the file is too short to tell). Meant for a file
    /// whose `expectedLength` came back nil: a safetensors file that holds its
    /// whole header then has one that does not parse.
    public static func corruption(of url: URL, format: WeightFormat) -> String? {
        guard let file = try? RegularFile(path: url.path),
              let bytes = try? file.bytes(min(9, file.size), at: 0)
        else { return nil }
        switch format {
        case .safetensors:
            guard bytes.count >= 8 else { return nil }
            let headerLength = bytes[0..<8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            // The same bound SafetensorsFile.expectedLength sets on a header.
            guard headerLength > 0, headerLength < 1 << 30 else {
                return "declares a header of \(headerLength) bytes, which no safetensors writer produces"
            }
            if bytes.count == 9, bytes[8] != UInt8(ascii: "{") { return "has a header that is not a JSON object" }
            return UInt64(file.size) >= 8 + headerLength ? "has a complete header (\(headerLength) bytes) that is not valid" : nil
        case .gguf:
            guard bytes.count >= 4 else { return nil }
            return bytes[0..<4].elementsEqual("GGUF".utf8) ? nil : "does not start with the GGUF magic"
        case .pytorch:
            guard bytes.count >= 4 else { return nil }
            return ZipArchive.looksLikeZip(bytes) || LegacyTorchFile.looksLegacy(bytes) ? nil : "is neither a zip archive nor a legacy torch.save file"
        }
    }
}
