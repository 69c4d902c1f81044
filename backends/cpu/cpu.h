/* cpu.h — the built-in CPU backend (OpenBLAS + threaded C kernels). */
#ifndef LOOM_CPU_H
#define LOOM_CPU_H

#include "loom_backend.h"

/* Same contract as a plugin's loom_backend_entry; linked into libloom. */
const loom_backend_i *loom_cpu_backend_entry(const loom_host_i *host);

#endif
