// The HDF5 C API (Debian: libhdf5-dev, serial build).
#include <hdf5/serial/hdf5.h>
