"""The client-side attribute and lookup cache (``libcephfs_proxy.cache``).

Reserved for the coherent client cache negotiated with the daemon's
CLIENT_CACHE feature (``libcephfsd --enable-client-cache``); this version of
the client has no cache and never asks for the feature.
"""
