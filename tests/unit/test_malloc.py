"""The daemon's malloc settings: large buffers are reused, not faulted in anew.

libcephfs allocates a buffer the size of each write and frees it once the
data is written back; the daemon's settings (libcephfsd.cli._tune_malloc)
must let the next write reuse that memory.  Counted in a fresh process as
page faults over many allocate-touch-free rounds of 4 MiB.
"""

from __future__ import annotations

import subprocess
import sys

ROUNDS = 50
BUFFER = 4 << 20
PAGES = ROUNDS * BUFFER // 4096

PROBE = f"""
import ctypes, resource, sys
from libcephfsd.cli import _tune_malloc
libc = ctypes.CDLL("libc.so.6")
if sys.argv[1] == "daemon":
    _tune_malloc()
else:   # the daemon's settings before the trim threshold was set
    libc.mallopt(-3, 32 << 20)
    libc.mallopt(-8, 4)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def rounds(n):
    for _ in range(n):
        p = libc.malloc({BUFFER})
        ctypes.memset(p, 1, {BUFFER})
        libc.free(p)
rounds(2)       # the first allocation faults its pages in, whatever the settings
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds({ROUNDS})
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(settings: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, settings], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return int(out)


def test_freed_write_buffers_are_reused_without_faults():
    assert faults("daemon") < PAGES // 10


def test_without_the_trim_threshold_every_buffer_faults_again():
    # What the daemon did before: each freed buffer went back to the system
    # at once, and the next one cost a fault per page.
    assert faults("before") >= PAGES * 9 // 10
