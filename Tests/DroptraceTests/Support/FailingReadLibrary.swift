import DroptraceSupport
import Foundation

/// A shared library that, preloaded into droptrace (`LD_PRELOAD`), makes
/// every pread(2) of one file fail with EIO: a disk error on demand, for
/// the paths that must tell the system's failure from a file's content.
enum FailingReadLibrary {
    /// The environment variable naming the file whose reads fail (its path as
    /// /proc/self/fd shows it: absolute, links resolved).
    static let pathVariable = "DROPTRACE_TEST_FAILING_READ"

    static let source = """
        #define _GNU_SOURCE
        #include <dlfcn.h>
        #include <errno.h>
        #include <stdio.h>
        #include <stdlib.h>
        #include <string.h>
        #include <sys/types.h>
        #include <unistd.h>

        static int failing(int fd) {
            const char *target = getenv("\(pathVariable)");
            char link[64], path[4096];
            if (!target) return 0;
            snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
            ssize_t n = readlink(link, path, sizeof path - 1);
            if (n < 0) return 0;
            path[n] = 0;
            return strcmp(path, target) == 0;
        }

        ssize_t pread64(int fd, void *buffer, size_t count, off_t offset) {
            static ssize_t (*real)(int, void *, size_t, off_t);
            if (!real) real = (ssize_t (*)(int, void *, size_t, off_t))dlsym(RTLD_NEXT, "pread64");
            if (failing(fd)) { errno = EIO; return -1; }
            return real(fd, buffer, count, offset);
        }

        ssize_t pread(int fd, void *buffer, size_t count, off_t offset) { return pread64(fd, buffer, count, offset); }
        """

    /// Compiles the library into `scratch` with the system's C compiler.
    static func build(in scratch: ScratchDirectory) throws -> URL {
        let sourceFile = scratch.path("failing_read.c"), library = scratch.path("failing_read.so")
        try source.write(to: sourceFile, atomically: true, encoding: .utf8)
        let result = try ChildProcess.run("/usr/bin/env", ["cc", "-shared", "-fPIC", "-O1", "-o", library.path, sourceFile.path, "-ldl"])
        guard result.status == 0 else { throw DroptraceError("cannot build the failing-read library: \(result.stderr)") }
        return library
    }
}
