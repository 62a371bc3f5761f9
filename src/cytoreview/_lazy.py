"""Lazy re-exports for a package's ``__init__``: each public name is imported from its module on first use.

A package that re-exports its API eagerly makes every import of one of its modules pay for all of them
(``cytoreview review-status --help`` imported pandas through ``cytoreview.review``'s table module). With
:func:`lazy_exports` the package ``__init__`` lists where each name lives and imports nothing::

    __getattr__, __dir__ = lazy_exports(__name__, {"Project": "cytoreview.review.store", ...})

``from cytoreview.review import Project`` then imports only ``cytoreview.review.store`` (PEP 562).
"""

from __future__ import annotations

import sys
import types
from importlib import import_module


class _LazyPackage(types.ModuleType):
    """A package whose re-exported names win over its submodules of the same name.

    The import system binds a submodule on its package when the submodule is loaded (``cytoreview.train.refit``
    the module); where the package re-exports a function of that name (``cytoreview.train.refit`` the function),
    the function is bound instead, as an eager ``from cytoreview.train.refit import refit`` in ``__init__`` did.
    """

    def __setattr__(self, name: str, value) -> None:
        exports = self.__dict__.get("_lazy_exports", {})
        if isinstance(value, types.ModuleType) and value.__name__ == f"{self.__name__}.{name}" \
                and exports.get(name) == value.__name__:
            value = getattr(value, name)
        super().__setattr__(name, value)


def lazy_exports(package: str, exports: dict[str, str]):
    """Make ``package`` import each name of ``exports`` from its module on first access.

    Parameters
    ----------
    package : str
        The package's ``__name__`` (it must be in ``sys.modules``, i.e. call this from its ``__init__``).
    exports : dict of str to str
        Public name -> the module that defines it.

    Returns
    -------
    (callable, callable)
        The package's ``__getattr__`` and ``__dir__``.
    """
    module = sys.modules[package]
    module.__dict__["_lazy_exports"] = dict(exports)
    module.__class__ = _LazyPackage

    def __getattr__(name: str):
        source = exports.get(name)
        if source is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(source), name)
        setattr(module, name, value)  # later accesses are plain attribute reads
        return value

    def __dir__() -> list[str]:
        return sorted(set(module.__dict__) | set(exports))

    return __getattr__, __dir__
