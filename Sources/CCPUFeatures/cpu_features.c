#include "cpu_features.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

int droptrace_cpuid(unsigned int leaf, unsigned int subleaf, droptrace_cpuid_registers *out) {
    out->eax = out->ebx = out->ecx = out->edx = 0;
#if defined(__x86_64__) || defined(__i386__)
    // __get_cpuid_count checks the leaf against the highest one the CPU reports.
    return __get_cpuid_count(leaf, subleaf, &out->eax, &out->ebx, &out->ecx, &out->edx);
#else
    (void)leaf;
    (void)subleaf;
    return 0;
#endif
}

unsigned long long droptrace_xcr0(void) {
#if defined(__x86_64__) || defined(__i386__)
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & (1u << 27))) return 0; // OSXSAVE
    unsigned int low, high;
    __asm__ volatile("xgetbv" : "=a"(low), "=d"(high) : "c"(0));
    return ((unsigned long long)high << 32) | low;
#else
    return 0;
#endif
}

int droptrace_request_amx_permission(void) {
#if defined(__linux__) && defined(__x86_64__)
    // From the kernel's uapi/asm/prctl.h (older headers lack them).
    const long getPermission = 0x1022, requestPermission = 0x1023, tileData = 18;
    syscall(SYS_arch_prctl, requestPermission, tileData);
    unsigned long long permitted = 0;
    if (syscall(SYS_arch_prctl, getPermission, &permitted) != 0) return 0;
    return (permitted >> tileData) & 1;
#else
    return 0;
#endif
}
