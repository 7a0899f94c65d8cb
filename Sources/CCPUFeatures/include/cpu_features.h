#ifndef DROPTRACE_CPU_FEATURES_H
#define DROPTRACE_CPU_FEATURES_H

/// The four registers CPUID returns for one leaf and subleaf.
typedef struct {
    unsigned int eax, ebx, ecx, edx;
} droptrace_cpuid_registers;

/// CPUID(leaf, subleaf) into `out`; returns 0 (and zeros) when the CPU has
/// no such leaf or is not x86-64.
int droptrace_cpuid(unsigned int leaf, unsigned int subleaf, droptrace_cpuid_registers *out);

/// XCR0, the state components the OS saves and restores (XGETBV 0); 0 when
/// the OS has not enabled XSAVE (OSXSAVE clear), where XGETBV would fault.
unsigned long long droptrace_xcr0(void);

/// Asks Linux for permission to use AMX tile data (arch_prctl
/// ARCH_REQ_XCOMP_PERM, feature 18); returns 1 when the process holds it
/// afterwards, 0 otherwise (older kernels, other systems).
int droptrace_request_amx_permission(void);

#endif
