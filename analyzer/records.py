"""Records: named tuples declared as `class Link(Record)`, as with
typing.NamedTuple, and made for a fraction of its cost.

typing.NamedTuple checks each field's annotation, and under `from __future__
import annotations` that compiles every annotation string into a ForwardRef:
the engine's 25 record classes cost every check 31 M instructions at import,
a quarter of them collections.namedtuple's own work.  A Record is the same
collections.namedtuple with the class body's defaults, methods and
docstring; its annotations stay the strings they were written as.  Type
checkers read `Record` as typing.NamedTuple.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import NamedTuple as Record
else:
    # What the class body may not redefine, as for typing.NamedTuple.
    _MADE_BY_NAMEDTUPLE = frozenset(
        {
            "__new__",
            "__init__",
            "__slots__",
            "__getnewargs__",
            "_fields",
            "_field_defaults",
            "_make",
            "_replace",
            "_asdict",
        }
    )
    _SET_BY_NAMEDTUPLE = frozenset({"__module__", "__annotations__"})

    class _RecordMeta(type):
        def __new__(
            cls, name: str, bases: tuple[type, ...], namespace: dict[str, Any]
        ) -> type[tuple[Any, ...]]:
            if bases != (Record,):
                raise TypeError(f"{name}: a Record derives from Record alone")
            annotations = namespace.get("__annotations__", {})
            fields = list(annotations)
            defaults = [namespace[field] for field in fields if field in namespace]
            if defaults and any(f not in namespace for f in fields[-len(defaults) :]):
                raise TypeError(f"{name}: a field without a default follows one with")
            made = collections.namedtuple(
                name, fields, defaults=defaults, module=namespace["__module__"]
            )
            made.__annotations__ = dict(annotations)
            for key, value in namespace.items():
                if key in _MADE_BY_NAMEDTUPLE:
                    raise AttributeError(f"{name}: a Record cannot set {key}")
                if key not in _SET_BY_NAMEDTUPLE and key not in annotations:
                    setattr(made, key, value)
            return made

    Record = type.__new__(_RecordMeta, "Record", (), {"__module__": __name__})
