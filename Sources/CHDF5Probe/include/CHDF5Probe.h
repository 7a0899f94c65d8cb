// The C helpers the store needs around libhdf5: the crash-safe probe and
// copying what a user added to a store.
#include "hdf5_probe.h"
#include "hdf5_copy.h"
