"""Installing and removing the wrappers, on classes (every client) or on one
client's resource objects. Idempotent; removal restores the exact objects that
were there before."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from llamonitor.integrations._core import Api, Patch, make_wrapper, patch_of

Target = tuple[type, str, Api, str]
"""(resource class, method name, kind of call, wrapper kind)."""

_MISSING: Any = object()
_MAX_CHAIN = 16


def _active_patch(value: Any) -> Patch | None:
    """Our active patch in ``value`` or in the chain of wrappers it wraps
    (another library may have wrapped ours)."""
    for _ in range(_MAX_CHAIN):
        if value is None or value is _MISSING:
            return None
        patch = patch_of(value)
        if patch is not None and patch.active:
            return patch
        value = getattr(value, "__wrapped__", None)
    return None


def _install(namespace: dict[str, Any] | Any, name: str, wrapper: Any, previous: Any) -> None:
    wrapper.__llamonitor_previous__ = previous
    if isinstance(namespace, type):
        setattr(namespace, name, wrapper)
    else:
        namespace[name] = wrapper


def patch_class(cls: type, name: str, api: Api, kind: str) -> None:
    """Wrap ``cls.name`` for every instance (a no-op if already wrapped)."""
    previous = cls.__dict__.get(name, _MISSING)
    if _active_patch(previous) is not None:
        return
    original = getattr(cls, name, _MISSING) if previous is _MISSING else previous
    if original is _MISSING:
        return
    _install(cls, name, make_wrapper(original, api, kind), previous)


def patch_instance(obj: Any, name: str, api: Api, kind: str) -> None:
    """Wrap ``obj.name`` for this one object (a no-op if already wrapped).

    The wrapper calls the SDK's own method, not a class-level wrapper of ours,
    so patching a client and its class never records a call twice.
    """
    namespace = obj.__dict__
    previous = namespace.get(name, _MISSING)
    if _active_patch(previous) is not None:
        return
    if previous is _MISSING:
        attr = getattr(type(obj), name, _MISSING)
        if attr is _MISSING:
            return
        if patch_of(attr) is not None:
            attr = attr.__llamonitor_original__
        original = attr.__get__(obj, type(obj))
    else:
        original = previous
    _install(namespace, name, make_wrapper(original, api, kind), previous)


def _remove(namespace: dict[str, Any] | type, name: str) -> None:
    store = namespace.__dict__ if isinstance(namespace, type) else namespace
    current = store.get(name, _MISSING)
    patch = patch_of(current)
    if patch is None:
        inner = _active_patch(current)  # ours under someone else's wrapper: switch it off
        if inner is not None:
            inner.active = False
        return
    patch.active = False
    previous = current.__llamonitor_previous__
    if isinstance(namespace, type):
        if previous is _MISSING:
            delattr(namespace, name)
        else:
            setattr(namespace, name, previous)
    elif previous is _MISSING:
        del namespace[name]
    else:
        namespace[name] = previous


def unpatch_class(cls: type, name: str) -> None:
    _remove(cls, name)


def unpatch_instance(obj: Any, name: str) -> None:
    _remove(obj.__dict__, name)


def instrument(
    targets: Iterable[Target], client: Any, resources: Callable[[Any], Iterable[Any]]
) -> None:
    """Patch ``targets`` on their classes (``client`` None) or on ``client``'s resources."""
    targets = list(targets)
    if client is None:
        for cls, name, api, kind in targets:
            patch_class(cls, name, api, kind)
        return
    for resource in resources(client):
        for cls, name, api, kind in targets:
            if isinstance(resource, cls):
                patch_instance(resource, name, api, kind)


def uninstrument(
    targets: Iterable[Target], client: Any, resources: Callable[[Any], Iterable[Any]]
) -> None:
    targets = list(targets)
    if client is None:
        for cls, name, _, _ in targets:
            unpatch_class(cls, name)
        return
    for resource in resources(client):
        for cls, name, _, _ in targets:
            if isinstance(resource, cls):
                unpatch_instance(resource, name)
