"""``libcephfsd`` command line: parse options, run the server until a signal."""

from __future__ import annotations

import argparse
import ctypes
import faulthandler
import logging
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from typing import Callable

from . import __version__
from .placement import Placement
from .protocol import DATA_CEILING, DEFAULT_MAX_DATA
from .transport import SPIN_DEFAULT_US, default_spin_us

DEFAULT_SOCKET = "/run/libcephfsd.sock"

log = logging.getLogger("libcephfsd")


def _mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal mode: {text!r}") from None
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"mode out of range: {text!r}")
    return mode


def _parse_size(text: str, low: int, high: int) -> int:
    """'4M', '256MiB', '65536' -> bytes, within [low, high]."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    try:
        value = int(t[:-1]) * units[t[-1]] if t[-1:] in units else int(t)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4M)") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low >> 10}K")
    if value > high:
        raise argparse.ArgumentTypeError(f"must be at most {high >> 20}M")
    return value


def _size(text: str) -> int:
    return _parse_size(text, 64 << 10, DATA_CEILING)


def _budget(text: str) -> int:
    return _parse_size(text, 64 << 10, 1 << 40)


def _buffers(text: str) -> int:
    return 0 if text.strip() == "0" else _budget(text)


#: --object-cache's default: a shared mount's object cache (libcephfs's is 200 MiB).
DEFAULT_OBJECT_CACHE = 512 << 20


def _object_cache(text: str) -> int | None:
    return None if text.strip().lower() == "libcephfs" else _parse_size(text, 1 << 20, 1 << 40)


def _number(text: str, unit: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of {unit}: {text!r}") from None


def _ttl(text: str) -> float:
    value = _number(text, "seconds")
    if not 0 < value <= 60:
        raise argparse.ArgumentTypeError("must be more than 0 and at most 60 seconds")
    return value


def _spin(text: str) -> float:
    value = _number(text, "microseconds")
    if not 0 <= value <= 10000:
        raise argparse.ArgumentTypeError("must be from 0 to 10000 microseconds")
    return value


def _python_cpu(text: str) -> Placement:
    try:
        return Placement.choose(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="libcephfsd",
        description="Serve CephFS to many local processes through one shared libcephfs. "
                    "Clients (the libcephfs_proxy library) connect over a unix socket; "
                    "those with the same configuration and credentials share one mount, "
                    "and each runs with the uid/gid the kernel reports for it. "
                    "SIGTERM/SIGINT shut down cleanly; SIGUSR1 writes every thread's "
                    "stack to stderr.")
    parser.add_argument(
        "--socket", metavar="PATH",
        default=os.environ.get("LIBCEPHFSD_SOCKET") or DEFAULT_SOCKET,
        help="unix socket to listen on (default: $LIBCEPHFSD_SOCKET, else %(default)s "
             "when unset)")
    parser.add_argument("--socket-mode", metavar="MODE", type=_mode, default=0o660,
                        help="permissions of the socket file, octal (default: 0660)")
    parser.add_argument("--log-level", default="info",
                        choices=("debug", "info", "warning", "error"),
                        help="log verbosity on stderr (default: info)")
    parser.add_argument("--max-io-size", metavar="SIZE", type=_size, default=DEFAULT_MAX_DATA,
                        help="largest read or write carried by one request; clients split "
                             "larger ones (default: %d MiB)" % (DEFAULT_MAX_DATA >> 20))
    parser.add_argument("--max-inflight-bytes", metavar="SIZE", type=_budget, default=None,
                        help="file data the daemon holds for requests at once, all clients "
                             "together; more waits (backpressure). Default: 64 x max-io-size")
    parser.add_argument("--max-read-buffers", metavar="SIZE", type=_buffers, default=None,
                        help="memory the daemon maps for clients' read buffers, all clients "
                             "together: large reads land in them and reach the application "
                             "without a copy; past it, reads go through the window with one "
                             "copy more. 0 turns them off. Default: 32 x max-io-size")
    parser.add_argument("--object-cache", metavar="SIZE|libcephfs", type=_object_cache,
                        default=DEFAULT_OBJECT_CACHE,
                        help="libcephfs object cache (client_oc_size) of each mount the daemon "
                             "makes, shared by all the clients on it, unless their "
                             "configuration sets client_oc_size; client_oc_max_dirty keeps "
                             "libcephfs's ratio to it. Every mount (one per configuration "
                             "and user) has its own, filled as data is read and written. "
                             "'libcephfs' keeps libcephfs's own default, sized for one "
                             "process (200 MiB). Default: %d MiB"
                             % (DEFAULT_OBJECT_CACHE >> 20))
    parser.add_argument("--spin-us", metavar="MICROSECONDS", type=_spin, default=None,
                        help="after answering, poll the client's socket this long for its next "
                             "call before sleeping (0: never). Waking a sleeping thread costs "
                             "tens of microseconds on small VMs; polls that find nothing back "
                             "off, and only the one busy client's thread polls. Default: %g "
                             "when the daemon may run on several CPUs, else 0 (a thread "
                             "polling on the only CPU keeps its client off it)"
                             % SPIN_DEFAULT_US)
    parser.add_argument("--python-cpu", metavar="auto|any|N", type=_python_cpu,
                        default="auto",
                        help="CPU for the threads that run the daemon's Python (one per "
                             "connection). Python runs one thread at a time, and handing it "
                             "over to a thread last run on another CPU costs a cross-CPU "
                             "wake-up, tens of microseconds on VMs; kept on one CPU, busy "
                             "clients cost the daemon a fraction of that. 'auto' (default): "
                             "the last CPU the daemon may use, if it may use several; 'any': "
                             "leave them to the scheduler. libcephfs's own threads may always "
                             "use every CPU")
    parser.add_argument("--shutdown-timeout", metavar="SECONDS", type=float, default=30.0,
                        help="on SIGTERM/SIGINT, how long calls in progress may take to "
                             "finish before mounts are unmounted anyway (default: 30)")
    cache = parser.add_argument_group(
        "client cache", "Clients keep stat/lookup/readlink answers and the daemon pushes "
        "invalidations for every change made through it; changes made by other CephFS "
        "clients are bounded by --cache-ttl.")
    cache.add_argument("--enable-client-cache", action="store_true",
                       help="offer the cache to clients (they may opt out)")
    cache.add_argument("--cache-ttl", metavar="SECONDS", type=_ttl, default=1.0,
                       help="how long a cached answer lives (default: 1.0, at most 60)")
    cache.add_argument("--cache-entries", metavar="N", type=_positive, default=4096,
                       help="most entries a client may cache (default: 4096); clients "
                            "may ask for fewer")
    cache.add_argument("--cache-max-records", metavar="N", type=_positive, default=262144,
                       help="bound on what the daemon remembers of who caches what, per "
                            "filesystem (default: 262144); past it answers go uncached")
    parser.add_argument("--version", action="version", version=f"libcephfsd {__version__}")
    return parser.parse_args(argv)


def _tune_malloc() -> None:
    """Let buffers of a few MiB be reused, in a few arenas.

    libcephfs allocates a buffer the size of each write (up to max_data) and
    frees it once written back.  Served by mmap, every such buffer costs a
    page fault per 4 KiB, expensive in a VM: with the mmap threshold pinned
    at 128 KiB, 16 MiB of writes took 45 ms against 18 ms with buffers reused
    from a malloc arena (measured).  Arenas keep freed memory, so their number
    is capped: what they keep is bounded by the arenas, not the clients.
    (File data through data windows needs no daemon buffer at all.)

    Setting the mmap threshold stops glibc from moving the trim threshold
    with it (to twice the threshold), so it stayed at 128 KiB: every buffer
    freed at the top of an arena went back to the system and the next write
    faulted its pages in again.  Measured in one process writing 16 MiB in
    4 MiB calls, libcephfs's copies took 5.6 to 5.9 ms so, against 3.0 to
    3.6 ms with the threshold at 64 MiB, as glibc's own defaults give.
    What arenas keep between writes is still returned every couple of
    seconds (_malloc_trimmer).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)     # M_MMAP_THRESHOLD: above max_data's default
        libc.mallopt(-1, 64 << 20)     # M_TRIM_THRESHOLD: as glibc would set it
        libc.mallopt(-8, 4)            # M_ARENA_MAX
    except (OSError, AttributeError):
        log.debug("mallopt unavailable; malloc keeps its defaults")


def _malloc_trimmer() -> Callable[[], None] | None:
    """A function that hands memory malloc holds free back to the system.

    With buffers reused from arenas (see _tune_malloc), memory freed after a
    burst of large writes stays in the arenas, fragmented: measured, 920 MiB
    anonymous RSS in a daemon whose live data (libcephfs's object cache,
    writes in flight) was under half that.  malloc_trim(0) releases the free
    pages of every arena; the accept loop calls it every couple of seconds.
    """
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]

    def trimmer() -> None:
        t0 = time.monotonic()
        released = trim(0)
        took = time.monotonic() - t0
        if took > 0.05:
            log.info("malloc_trim took %.0f ms (released: %s)", took * 1000, bool(released))

    return trimmer


def _raise_fd_limit() -> int:
    """Allow as many descriptors as the hard limit permits; return the limit.

    Each client costs the daemon one socket (two descriptors with the cache:
    its shared page), and distributions often start services at 1024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the descriptor limit from %d to %d: %s", soft, hard, exc)
    return soft


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s[%(threadName)s]: %(message)s")
    _tune_malloc()
    fd_limit = _raise_fd_limit()
    # Imported here so that --help works without Ceph installed.
    from .backend import CephBackend
    from .coherence import Coherence
    from .server import DaemonRunning, Server

    private_dir = tempfile.mkdtemp(prefix="libcephfsd-")
    try:
        try:
            coherence = (Coherence(args.cache_ttl, args.cache_max_records, args.cache_entries)
                         if args.enable_client_cache else None)
            server = Server(args.socket, socket_mode=args.socket_mode, max_data=args.max_io_size,
                            private_dir=private_dir, shutdown_timeout=args.shutdown_timeout,
                            coherence=coherence, max_inflight=args.max_inflight_bytes,
                            max_read_buffers=args.max_read_buffers,
                            spin_us=(default_spin_us() if args.spin_us is None
                                     else args.spin_us),
                            housekeeping=_malloc_trimmer(),
                            placement=args.python_cpu,
                            backend=CephBackend(object_cache=args.object_cache))
            server.bind()
        except DaemonRunning as exc:
            log.error("not starting: %s", exc)
            return 1
        except OSError as exc:
            log.error("cannot listen on %s: %s", args.socket, exc)
            return 1

        def on_signal(signum: int, _frame: object) -> None:
            log.info("received %s", signal.Signals(signum).name)
            server.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        # `kill -USR1 <pid>`: every thread's Python stack on stderr, for a
        # call that seems stuck.
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        log.info("libcephfsd %s ready on %s (pid %d, libcephfs %s, client cache %s, "
                 "descriptor limit %d, %r)", __version__, args.socket, os.getpid(),
                 ".".join(map(str, server.backend.version)),
                 f"on, ttl {args.cache_ttl}s" if coherence else "off", fd_limit,
                 server.placement)
        if fd_limit < 4096:
            log.warning("descriptor limit %d allows fewer than ~%d clients; raise it "
                        "(ulimit -n, LimitNOFILE=)", fd_limit, fd_limit // 2)
        server.serve_forever()
        return 0
    finally:
        shutil.rmtree(private_dir, ignore_errors=True)
