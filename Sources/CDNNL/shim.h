// oneDNN's C API (Debian: libdnnl-dev).
#include <dnnl.h>
