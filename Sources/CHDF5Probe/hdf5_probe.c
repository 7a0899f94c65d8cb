// A child process reads the whole HDF5 file, so that what libhdf5 does with
// crafted metadata (wild reads, endless loops) happens there and not here.
#define _GNU_SOURCE
#include "hdf5_probe.h"
#include "hdf5_checks.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hdf5/serial/hdf5.h>

// libhdf5 is built thread-safe on Debian: every API call holds one global
// recursive lock. A fork while another thread holds it would leave the child
// waiting for a thread it does not have, so the forking thread takes that
// lock first (other threads then wait at libhdf5's door, outside it) and the
// child starts with a lock it owns. 1.10 exports only the internal
// `H5TS_mutex_lock` and the `H5_g` whose first member is the lock;
// 1.14 has the public `H5TSmutex_acquire`.
#if defined(H5_HAVE_THREADSAFE) && H5_VERS_MAJOR == 1 && (H5_VERS_MINOR == 10 || H5_VERS_MINOR == 12)
typedef struct {  // H5TS_mutex_t of 1.10 and 1.12 (H5TSprivate.h)
    pthread_t owner_thread;
    pthread_mutex_t atomic_lock;
    pthread_cond_t cond_var;
    unsigned int lock_count;
} library_lock;
extern library_lock H5_g;  // H5_api_t; its first member is the API lock
extern herr_t H5TS_mutex_lock(library_lock *mutex);
extern herr_t H5TS_mutex_unlock(library_lock *mutex);
static void hold_library(void) { (void)H5TS_mutex_lock(&H5_g); }
static void release_library(void) { (void)H5TS_mutex_unlock(&H5_g); }
// In the child: another thread may have been inside the lock's own short
// critical section at the fork; start its parts afresh, owned by this thread.
static void own_library_in_child(void) {
    pthread_mutex_init(&H5_g.atomic_lock, NULL);
    pthread_cond_init(&H5_g.cond_var, NULL);
    H5_g.owner_thread = pthread_self();
    H5_g.lock_count = 1;
}
#elif defined(H5_HAVE_THREADSAFE) && H5_VERS_MAJOR == 1 && H5_VERS_MINOR >= 14
extern herr_t H5TSmutex_acquire(unsigned int lock_count, hbool_t *acquired);  // H5TSdevelop.h
extern herr_t H5TSmutex_release(unsigned int *lock_count);
static unsigned int held_count = 0;
static void hold_library(void) {
    hbool_t acquired = 0;
    while (!acquired && H5TSmutex_acquire(1, &acquired) >= 0) {}
}
static void release_library(void) { (void)H5TSmutex_release(&held_count); }
static void own_library_in_child(void) {}
#else
// Not thread-safe: libhdf5 is never called from two threads at once.
static void hold_library(void) {}
static void release_library(void) {}
static void own_library_in_child(void) {}
#endif

// A probe's child shares every descriptor this process had open at the fork,
// and with it the flock(2) libhdf5 took on each file it opens, until it
// closes them first thing (`probe_in_child`): a store another thread closes
// in that moment stays locked, and opening it then fails ("unable to lock
// file, errno = 11"). Probes hold this lock shared from the fork until their
// child is reaped; opening a file holds it exclusively, so it waits for those
// children instead of failing.
static pthread_rwlock_t children_alive = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;

void hdf5_open_begin(void) { (void)pthread_rwlock_wrlock(&children_alive); }
void hdf5_open_end(void) { (void)pthread_rwlock_unlock(&children_alive); }

typedef struct { size_t element_limit; } probe_context;

// The most elements one read of a dataset takes: a compressed dataset may
// expand to far more than its file holds (deflate reaches about 1000:1), so
// datasets are read in slabs of at most this many elements, whatever their size.
#define SLAB_ELEMENTS ((hsize_t)1 << 20)

// One read into a buffer of `count` elements of `size` bytes; `layout` is
// the dataspace of the buffer (to reclaim variable-length values).
static void read_buffer(hid_t object, int is_attribute, hid_t memory_type, hid_t memory_space, hid_t file_space,
                        hid_t layout, size_t count, size_t size) {
    void *buffer = calloc(count, size);
    if (!buffer) return;
    if (is_attribute) {
        (void)H5Aread(object, memory_type, buffer);
    } else {
        (void)H5Dread(object, memory_type, memory_space, file_space, H5P_DEFAULT, buffer);
    }
    if (H5Tis_variable_str(memory_type) > 0 || H5Tdetect_class(memory_type, H5T_VLEN) > 0) {
        (void)H5Dvlen_reclaim(memory_type, layout, H5P_DEFAULT, buffer);
    }
    free(buffer);
}

// Reads a dataset slab by slab: the trailing dimensions whole while they
// fit in SLAB_ELEMENTS, the next one in steps, the leading ones one index at
// a time.
static void read_dataset_in_slabs(hid_t dataset, hid_t memory_type, hid_t space, size_t size) {
    int rank = H5Sget_simple_extent_ndims(space);
    if (rank <= 0 || rank > H5S_MAX_RANK) {
        read_buffer(dataset, 0, memory_type, H5S_ALL, H5S_ALL, space, 1, size);
        return;
    }
    hsize_t dims[H5S_MAX_RANK], start[H5S_MAX_RANK], count[H5S_MAX_RANK];
    if (H5Sget_simple_extent_dims(space, dims, NULL) < 0) return;
    hsize_t whole = 1;
    int split = rank - 1;
    while (split >= 0 && whole * dims[split] <= SLAB_ELEMENTS) whole *= dims[split--];
    if (split < 0) {
        read_buffer(dataset, 0, memory_type, H5S_ALL, H5S_ALL, space, (size_t)whole, size);
        return;
    }
    hsize_t step = SLAB_ELEMENTS / whole;
    for (int i = 0; i < rank; i++) { start[i] = 0; count[i] = i > split ? dims[i] : 1; }
    for (;;) {
        count[split] = dims[split] - start[split] < step ? dims[split] - start[split] : step;
        hid_t slab = H5Scopy(space);
        hid_t memory_space = H5Screate_simple(1, (hsize_t[]){ count[split] * whole }, NULL);
        if (slab >= 0 && memory_space >= 0
            && H5Sselect_hyperslab(slab, H5S_SELECT_SET, start, NULL, count, NULL) >= 0) {
            read_buffer(dataset, 0, memory_type, memory_space, slab, memory_space, (size_t)(count[split] * whole), size);
        }
        if (memory_space >= 0) H5Sclose(memory_space);
        if (slab >= 0) H5Sclose(slab);
        // The next slab: along the split dimension, then the leading ones as an odometer.
        start[split] += count[split];
        int i = split;
        while (i >= 0 && start[i] >= dims[i]) {
            start[i] = 0;
            if (--i >= 0) start[i] += 1;
        }
        if (i < 0) return;
    }
}

// Reads every value of a dataset or an attribute, as the project's reader
// would: strings in their own type, numbers in the native one. Errors are
// ignored: only surviving the read matters here.
static void read_values(hid_t object, int is_attribute, size_t element_limit) {
    hid_t file_type = is_attribute ? H5Aget_type(object) : H5Dget_type(object);
    hid_t space = is_attribute ? H5Aget_space(object) : H5Dget_space(object);
    hssize_t count = space >= 0 ? H5Sget_simple_extent_npoints(space) : 0;
    hid_t memory_type = -1;
    if (file_type >= 0 && count > 0) {
        memory_type = H5Tget_class(file_type) == H5T_STRING
            ? H5Tcopy(file_type) : H5Tget_native_type(file_type, H5T_DIR_DEFAULT);
    }
    size_t size = memory_type >= 0 ? H5Tget_size(memory_type) : 0;
    if (size > 0 && (size_t)count <= element_limit) {
        // Attributes have no filters: their values are no larger than the file.
        if (is_attribute) {
            read_buffer(object, 1, memory_type, H5S_ALL, H5S_ALL, space, (size_t)count, size);
        } else {
            read_dataset_in_slabs(object, memory_type, space, size);
        }
    }
    if (memory_type >= 0) H5Tclose(memory_type);
    if (space >= 0) H5Sclose(space);
    if (file_type >= 0) H5Tclose(file_type);
}

static herr_t read_attribute(hid_t location, const char *name, const H5A_info_t *info, void *data) {
    (void)info;
    const probe_context *context = data;
    hid_t attribute = H5Aopen(location, name, H5P_DEFAULT);
    if (attribute < 0) return 0;
    read_values(attribute, 1, context->element_limit);
    H5Aclose(attribute);
    return 0;
}

static herr_t read_object(hid_t root, const char *name, const H5O_info_t *info, void *data) {
    const probe_context *context = data;
    hid_t object = H5Oopen(root, name, H5P_DEFAULT);
    if (object < 0) return 0;
    hsize_t index = 0;
    (void)H5Aiterate2(object, H5_INDEX_NAME, H5_ITER_NATIVE, &index, read_attribute, data);
    // A chunk too large to decompress is the reader's to refuse (`hdf5_dataset_storage_of`), unread here.
    if (info->type == H5O_TYPE_DATASET && hdf5_chunk_bytes(object) <= HDF5_CHUNK_BYTES_LIMIT) {
        read_values(object, 0, context->element_limit);
    }
    H5Oclose(object);
    return 0;
}

// The child's address space: what it has (the parent's, inherited) plus room
// for two of the largest reads (8-byte elements) and libhdf5's own caches.
static void cap_address_space(size_t element_limit) {
    unsigned long pages = 0;
    FILE *statm = fopen("/proc/self/statm", "r");
    if (statm) {
        if (fscanf(statm, "%lu", &pages) != 1) pages = 0;
        fclose(statm);
    }
    if (pages == 0) return;
    rlim_t current = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE);
    if ((rlim_t)element_limit > ((rlim_t)1 << 40)) return;  // no meaningful cap
    rlim_t room = (rlim_t)element_limit * 16 + ((rlim_t)512 << 20);
    struct rlimit limit = { current + room, current + room };
    (void)setrlimit(RLIMIT_AS, &limit);
}

static void _Noreturn probe_in_child(const char *path, size_t element_limit, double seconds, pid_t parent) {
    // Die of the signal itself, without the parent's crash reporter.
    const int fatal[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS };
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++) signal(fatal[i], SIG_DFL);
    // The child shares the parent's open files, its run lock among them: it must never outlive the parent
    // (killed while the child read a store that makes libhdf5 loop, it held the lock for good), nor its
    // time limit, whatever happens to the parent's watch.
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    // Nor keep the parent's files: each descriptor shares its open file, and
    // with it the flock(2) libhdf5 holds on a store, so a store the parent
    // closed stayed locked to every other process until this child exited
    // ("unable to lock file, errno = 11" in a `report` started meanwhile).
    // The probe opens what it reads itself; stdin, stdout and stderr stay.
    closefrom(STDERR_FILENO + 1);
    signal(SIGALRM, SIG_DFL);
    alarm(seconds > 0 && seconds < 3600 ? (unsigned)seconds + 2 : 3602);
    int null_device = open("/dev/null", O_WRONLY);
    if (null_device >= 0) { dup2(null_device, STDOUT_FILENO); dup2(null_device, STDERR_FILENO); }
    cap_address_space(element_limit);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file >= 0) {
        probe_context context = { element_limit };
        (void)H5Ovisit2(file, H5_INDEX_NAME, H5_ITER_NATIVE, read_object, &context, H5O_INFO_BASIC);
    }
    // _exit: no atexit handlers, so nothing of the parent's (open files,
    // libhdf5's shutdown) runs twice.
    _exit(0);
}

/// The state letter of process `pid` in /proc/<pid>/stat (R running, S or D asleep...); '?' when unknown.
static char process_state(pid_t pid) {
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *file = fopen(path, "re");
    if (!file) return '?';
    size_t length = fread(line, 1, sizeof line - 1, file);
    fclose(file);
    line[length] = 0;
    // "pid (comm) S ...": the command may hold spaces and parentheses, so from the last ')'.
    char *end = strrchr(line, ')');
    return end && end[1] == ' ' && end[2] ? end[2] : '?';
}

static hdf5_probe_result probe_and_reap(const char *path, double seconds, size_t element_limit) {
    hdf5_probe_result result = { HDF5_PROBE_READ, 0, 0 };
    // libhdf5's initialisation (and its lock) must exist before it is taken.
    (void)H5open();
    hold_library();
    pid_t parent = getpid();
    pid_t child = fork();
    if (child == 0) {
        own_library_in_child();
        probe_in_child(path, element_limit, seconds, parent);
    }
    release_library();
    if (child < 0) {
        result.outcome = HDF5_PROBE_UNAVAILABLE;
        result.error_number = errno;
        return result;
    }

    struct timespec start, now, pause = { 0, 1000000 };
    clock_gettime(CLOCK_MONOTONIC, &start);
    int status = 0;
    for (;;) {
        pid_t done = waitpid(child, &status, WNOHANG);
        if (done == child) break;
        if (done < 0 && errno != EINTR) {
            result.outcome = HDF5_PROBE_UNAVAILABLE;
            result.error_number = errno;
            return result;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        double elapsed = (double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9;
        if (elapsed > seconds) {
            // A loop in libhdf5 keeps the child running; one asleep in the kernel (D: waiting for a
            // stalled network file system, S: for a pipe) was kept waiting, which says nothing of the file.
            char state = process_state(child);
            kill(child, SIGKILL);
            while (waitpid(child, &status, 0) < 0 && errno == EINTR) {}
            result.outcome = state == 'D' || state == 'S' ? HDF5_PROBE_STALLED : HDF5_PROBE_TIMED_OUT;
            return result;
        }
        nanosleep(&pause, NULL);
        if (pause.tv_nsec < 20000000) pause.tv_nsec *= 2;
    }
    if (WIFSIGNALED(status)) {
        result.outcome = HDF5_PROBE_CRASHED;
        result.signal_number = WTERMSIG(status);
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        result.outcome = HDF5_PROBE_CRASHED;
    }
    return result;
}

hdf5_probe_result hdf5_probe_file(const char *path, double seconds, size_t element_limit) {
    (void)pthread_rwlock_rdlock(&children_alive);
    hdf5_probe_result result = probe_and_reap(path, seconds, element_limit);
    (void)pthread_rwlock_unlock(&children_alive);
    return result;
}
