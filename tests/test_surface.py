"""libcephfs_proxy's public surface against the real cephfs binding's."""

from __future__ import annotations

import inspect
import sys
import types

import pytest

import libcephfs_proxy as proxy
from libcephfsd.backend import cephfs

# What dir(cephfs) shows because the binding imports it, not what it defines.
STDLIB_REEXPORTS = {"datetime", "namedtuple"}


def public(obj) -> set[str]:
    return {n for n in dir(obj) if not n.startswith("_")
            and not isinstance(getattr(obj, n), types.ModuleType)}


def coverage() -> tuple[int, int, list[str]]:
    binding = public(cephfs.LibCephFS)
    missing = sorted(binding - public(proxy.LibCephFS))
    return len(binding) - len(missing), len(binding), missing


def test_the_client_never_loads_libcephfs():
    code = ("import sys, libcephfs_proxy; "
            "assert 'cephfs' not in sys.modules and 'libcephfsd.backend' not in sys.modules; "
            "maps = open('/proc/self/maps').read(); assert 'libcephfs.so' not in maps, maps")
    import subprocess
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_public_method_of_the_binding_exists():
    covered, total, missing = coverage()
    print(f"\nLibCephFS public members covered: {covered} of {total}")
    assert missing == []


def test_module_level_names_and_constants():
    binding = public(cephfs) - STDLIB_REEXPORTS
    assert binding - public(proxy) == set()
    for name in binding:
        value = getattr(cephfs, name)
        if isinstance(value, int):
            assert getattr(proxy, name) == value, name


def test_dir_result_dir_entry_stat_result():
    assert public(cephfs.DirResult) <= public(proxy.DirResult)
    for dunder in ("__enter__", "__exit__"):
        assert hasattr(proxy.DirResult, dunder)
    assert proxy.DirEntry._fields == cephfs.DirEntry._fields
    assert proxy.StatResult._fields == cephfs.StatResult._fields
    assert public(cephfs.DirEntry) <= public(proxy.DirEntry)
    for flag in ("DT_DIR", "DT_REG", "DT_LNK"):
        assert getattr(proxy.DirEntry, flag) == getattr(cephfs.DirEntry, flag)
    assert proxy.LibCephFS.NO_CONF_FILE == cephfs.LibCephFS.NO_CONF_FILE
    assert proxy.LibCephFS.DEFAULT_CONF_FILES == cephfs.LibCephFS.DEFAULT_CONF_FILES


def test_exception_hierarchy_matches():
    for name in public(cephfs):
        cls = getattr(cephfs, name)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            ours = getattr(proxy, name)
            assert [c.__name__ for c in ours.__mro__] == [c.__name__ for c in cls.__mro__], name


def test_exception_objects_behave_alike():
    theirs = cephfs.ObjectNotFound(2, "error in stat: x")
    ours = proxy.ObjectNotFound(2, "error in stat: x")
    assert (str(ours), ours.args, ours.errno, ours.strerror, ours.get_error_code()) == \
        (str(theirs), theirs.args, theirs.errno, theirs.strerror, theirs.get_error_code())


def _probe_args(params: list[inspect.Parameter]) -> dict:
    return {p.name: None for p in params}


@pytest.mark.parametrize("name", sorted(public(cephfs.LibCephFS) - {"state", "NO_CONF_FILE",
                                                                     "DEFAULT_CONF_FILES"}))
def test_parameter_names_match(name):
    """Keyword names are part of the API: the binding must accept ours.

    The binding's methods carry no signature, but Cython rejects an unknown
    keyword before running the method body: calling with our names (on an
    unmounted instance) must fail in any way except that.  Methods of one or
    no parameter take no keywords in the binding, so for them the arity is
    compared instead.
    """
    params = list(inspect.signature(getattr(proxy.LibCephFS, name)).parameters.values())[1:]
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return  # require_state(*args): nothing to compare
    method = getattr(cephfs.LibCephFS(), name)
    if not params or (len(params) == 1 and params[0].default is inspect.Parameter.empty):
        with pytest.raises(TypeError, match="takes (no|exactly one) argument"):
            method(*([None] * (len(params) + 1)))
        return
    try:
        method(**_probe_args(params))
    except TypeError as exc:
        assert "keyword" not in str(exc), f"{name}{[p.name for p in params]}: {exc}"
    except Exception:
        pass
