"""A TorchServe worker, and the gateway, keep the memory they freed for their next request.

glibc's malloc gives back to the kernel whatever is free above 128 KiB at the top of its heap (a
threshold that only rises to twice the largest block it has unmapped so far), and maps blocks over
its mmap threshold afresh each time. A ViT-B/16 request allocates and frees ~80 MB of activations,
so a worker faulted its pages in again on every request: ~20,000 page faults and ~25 ms of kernel
time per photo, with the forward pass 1.3-1.6x slower than in a plain process (int8 on 2 cores,
measured). Fixed thresholds keep the heap between requests; what a worker holds is bounded by its
largest request. The gateway holds a 12 MP photo (~2 MB) in a few copies per AnalyzeMeal, each at
glibc's dynamic mmap threshold and so mapped afresh: ~2,000 page faults per request, and its CPU
per request 19 -> 15 ms without them (bench/gateway_ab.py).
"""

import ctypes

# glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's ceiling; only larger blocks are mapped on their own
TRIM_THRESHOLD_BYTES = 512 * 1024 * 1024  # free memory at the top of the heap kept for the next request


def keep_freed_memory() -> bool:
    """True where the C library took the settings (glibc); elsewhere nothing changes."""
    return set_thresholds(MMAP_THRESHOLD_BYTES, TRIM_THRESHOLD_BYTES)


def set_thresholds(mmap_bytes: int, trim_bytes: int) -> bool:
    """glibc's mmap and trim thresholds (fixed: glibc stops adjusting them); False elsewhere."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_bytes) and mallopt(M_TRIM_THRESHOLD, trim_bytes))
