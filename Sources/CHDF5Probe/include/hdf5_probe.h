#ifndef DROPTRACE_HDF5_PROBE_H
#define DROPTRACE_HDF5_PROBE_H

#include <stddef.h>

/// How a probe of an HDF5 file ended.
typedef enum {
    HDF5_PROBE_READ = 0,       ///< every object and attribute was read (errors libhdf5 reports cleanly included)
    HDF5_PROBE_CRASHED = 1,    ///< libhdf5 died on the file: `signal_number` says how
    HDF5_PROBE_TIMED_OUT = 2,  ///< libhdf5 was still reading after the time limit, busy on the processor (a loop in its metadata)
    HDF5_PROBE_UNAVAILABLE = 3, ///< no child process could be started: `error_number` says why
    HDF5_PROBE_STALLED = 4     ///< past the time limit asleep in the kernel (a stalled file system), not running
} hdf5_probe_outcome;

typedef struct {
    hdf5_probe_outcome outcome;
    int signal_number;
    int error_number;
} hdf5_probe_result;

/// Reads every object, dataset and attribute of the HDF5 file at `path` in a
/// forked child process, and reports whether libhdf5 survived it.
///
/// libhdf5 trusts its file's metadata: a crafted file can make it read wild
/// pointers or loop forever (global heap collections, chunk indexes), which
/// no check of its return codes can catch. The child does only what the real
/// reader would do, so a file that passes is safe to read in this process.
///
/// - `seconds`: the time the child gets before it is killed.
/// - `element_limit`: no dataset or attribute of more elements is read (the
///   caller's reader refuses those itself), and the child's extra address
///   space is capped from it, so a crafted size cannot exhaust memory.
hdf5_probe_result hdf5_probe_file(const char *path, double seconds, size_t element_limit);

/// Brackets libhdf5's opening of a file (`H5Fopen`) in this process: waits
/// until no probe's child is alive, and keeps new ones from starting until
/// `hdf5_open_end`. A child holds on to the lock libhdf5 took on every file
/// open at its fork, closed by this process meanwhile or not.
void hdf5_open_begin(void);
void hdf5_open_end(void);

#endif
