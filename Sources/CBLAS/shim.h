// OpenBLAS's CBLAS interface (Debian: libopenblas-dev puts cblas.h on the multiarch include path).
#include <cblas.h>
// OpenBLAS (DYNAMIC_ARCH) exports these: they drop and redo its choice of
// kernels, reading OPENBLAS_CORETYPE again.
void gotoblas_dynamic_init(void);
void gotoblas_dynamic_quit(void);
