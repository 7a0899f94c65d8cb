import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One-line descriptions of operating-system and Foundation errors, so every
/// message droptrace prints stays `path: problem` on a single line.
public enum SystemError {
    /// The C library's text for `code` ("No space left on device"); `errno` by default.
    public static func describe(_ code: Int32 = errno) -> String {
        String(cString: strerror(code))
    }

    /// A one-line account of any error: a `DroptraceError`'s description;
    /// for a Foundation (Cocoa) error, the file it names and the POSIX
    /// reason behind it (`/a/b: No such file or directory`) instead of its
    /// "The operation could not be completed" text; for anything else its
    /// description on one line.
    public static func summary(of error: any Error) -> String {
        if let error = error as? DroptraceError { return oneLine(error.description) }
        if let error = error as? DecodingError { return summary(of: error) }
        let nsError = error as NSError
        let reason: String
        if nsError.domain == NSPOSIXErrorDomain {
            reason = describe(Int32(nsError.code))
        } else if let underlying = nsError.userInfo[NSUnderlyingErrorKey] as? NSError,
                  underlying.domain == NSPOSIXErrorDomain {
            reason = describe(Int32(underlying.code))
        } else if nsError.domain == NSCocoaErrorDomain, let known = cocoaReason(nsError.code) {
            reason = known
        } else if let detail = nsError.userInfo[NSDebugDescriptionErrorKey] as? String {
            // JSONSerialization's reason ("Too many nested arrays or dictionaries around character 4267.").
            return oneLine(detail)
        } else {
            return oneLine(String(describing: error))
        }
        let path = nsError.userInfo[NSFilePathErrorKey] as? String ?? (nsError.userInfo[NSURLErrorKey] as? URL)?.path
        return oneLine(path.map { "\($0): \(reason)" } ?? reason)
    }

    /// `text` on one line: line breaks and other control characters become
    /// spaces, and runs of spaces one space.
    public static func oneLine(_ text: String) -> String {
        var result = ""
        var pendingSpace = false
        for scalar in text.unicodeScalars {
            if scalar.properties.generalCategory == .control || scalar == " "
                || scalar == "\u{2028}" || scalar == "\u{2029}" {
                pendingSpace = !result.isEmpty
                continue
            }
            if pendingSpace { result.unicodeScalars.append(" ") }
            pendingSpace = false
            result.unicodeScalars.append(scalar)
        }
        return result
    }

    private static func summary(of error: DecodingError) -> String {
        let context: DecodingError.Context
        switch error {
        case .dataCorrupted(let c), .keyNotFound(_, let c), .typeMismatch(_, let c), .valueNotFound(_, let c):
            context = c
        @unknown default:
            return oneLine(String(describing: error))
        }
        let location = codingPathText(context.codingPath)
        return oneLine((location.isEmpty ? "" : "at \(location): ") + context.debugDescription)
    }

    /// Foundation's file errors that carry no POSIX code underneath.
    private static func cocoaReason(_ code: Int) -> String? {
        switch CocoaError.Code(rawValue: code) {
        case .fileNoSuchFile, .fileReadNoSuchFile: describe(ENOENT)
        case .fileReadNoPermission, .fileWriteNoPermission: describe(EACCES)
        case .fileWriteOutOfSpace: describe(ENOSPC)
        case .fileWriteFileExists: describe(EEXIST)
        case .fileWriteVolumeReadOnly: describe(EROFS)
        case .fileReadTooLarge: describe(EFBIG)
        case .fileReadInapplicableStringEncoding, .fileWriteInapplicableStringEncoding:
            "not text in the expected encoding (UTF-8)"
        case .fileReadCorruptFile: "the file is damaged or not in the expected format"
        default: nil
        }
    }
}
