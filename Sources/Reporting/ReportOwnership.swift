import DroptraceSupport
import Foundation
import ScoreStore

/// Which report.md and figures a run may replace: only droptrace's own.
///
/// Every report and figure droptrace writes carries `marker` on a line of
/// its own (the first line of report.md; after the XML declaration of an
/// SVG). An output directory may hold other files of these names (notes of
/// one's own in report.md, a project directory given as the output): they are
/// never replaced. Reports and figures written before the marker existed are
/// recognised by the droptrace store beside them (`scores.h5`), which
/// `trace` writes before its first report.
public enum ReportOwnership {
    /// An HTML / XML comment, invisible where Markdown or SVG is rendered.
    public static let marker = "<!-- written by droptrace: its next run into this directory replaces this file -->"

    /// `markdown` as droptrace writes it: the marker, then the report.
    static func marked(_ markdown: String) -> String { marker + "\n" + markdown }

    /// Throws unless `outDir/report.md` and each of `outDir/figures/<figureNames>`
    /// is absent or droptrace's, and `outDir/figures` absent or a directory;
    /// cheap, so `trace` calls it before any work.
    /// - Throws: `DroptraceError` naming the first file that is not droptrace's,
    ///   or that the writer could not replace (a directory where a file goes,
    ///   anything but a directory, a symbolic link included, where `figures` goes).
    public static func checkReplaceable(in outDir: URL, figureNames: [String]) throws {
        let store = outDir.appendingPathComponent(ScoreFile.outputFileName).path
        let besideStore = FileManager.default.fileExists(atPath: store)
            && (try? ReplaceableOutput.check(store, signatures: ScoreFile.signatures)) != nil
        let refusal = "move it or choose another output directory"
        func check(_ url: URL, beginning: String) throws {
            // Links, FIFOs and the like are never followed: the writer renames over them.
            var info = stat()
            guard lstat(url.path, &info) == 0 else { return }
            if info.st_mode & S_IFMT == S_IFDIR {
                throw DroptraceError("is a directory, where the report writes a file; \(refusal)", path: url.path)
            }
            guard info.st_mode & S_IFMT == S_IFREG else { return }
            // Beside a store, earlier versions' files without the marker are droptrace's too.
            try ReplaceableOutput.check(
                url.path, signatures: besideStore ? [[]] : [Array(beginning.utf8)],
                refusal: "droptrace did not write it (its reports and figures carry the line \(marker)); \(refusal)")
        }
        try check(outDir.appendingPathComponent(ReportWriter.reportFileName), beginning: marker)
        let figures = outDir.appendingPathComponent(ReportWriter.figuresDirectory)
        var info = stat()
        guard lstat(figures.path, &info) == 0 else { return }
        guard info.st_mode & S_IFMT == S_IFDIR else {
            let kind = info.st_mode & S_IFMT == S_IFLNK ? "a symbolic link" : "not a directory"
            throw DroptraceError("is \(kind), where the report writes its figures' directory; \(refusal)", path: figures.path)
        }
        for name in Set(figureNames).sorted() {
            try check(figures.appendingPathComponent(name), beginning: SVGDocument.prolog)
        }
    }
}
