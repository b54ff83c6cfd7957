"""libcephfsd: one process that owns real CephFS mounts and serves many clients.

The daemon lives in this package; the wire protocol both sides speak is
:mod:`libcephfsd.protocol`, which imports neither sockets nor ``cephfs`` so
that client processes can use it without loading libcephfs.
"""

__version__ = "0.1.0"
