"""Records behave as the typing.NamedTuple they are declared like."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from analyzer.records import Record


class Point(Record):
    """A point."""

    x: int
    y: int = 0

    def moved(self, by: int) -> Point:
        return self._replace(x=self.x + by)


class TypingPoint(NamedTuple):
    x: int
    y: int = 0


def test_a_record_is_the_named_tuple_typing_makes() -> None:
    point = Point(1)
    assert point == (1, 0) == TypingPoint(1)
    assert hash(point) == hash(TypingPoint(1))
    assert Point._fields == TypingPoint._fields
    assert Point._field_defaults == TypingPoint._field_defaults == {"y": 0}
    assert point.moved(2) == Point(3, 0)
    assert Point(y=5, x=1)._asdict() == {"x": 1, "y": 5}
    assert repr(point) == "Point(x=1, y=0)"
    assert Point.__doc__ == "A point."
    assert Point.__annotations__ == {"x": "int", "y": "int"}
    assert Point.__module__ == __name__
    x, y = point
    assert (x, y) == (1, 0)
    with pytest.raises(AttributeError):
        point.x = 2  # type: ignore[misc]


def test_a_field_without_a_default_cannot_follow_one_with() -> None:
    with pytest.raises(TypeError, match="without a default"):

        class Bad(Record):
            x: int = 0
            y: int


def test_the_class_body_cannot_redefine_what_namedtuple_makes() -> None:
    with pytest.raises(AttributeError, match="_replace"):

        class Bad(Record):
            x: int

            def _replace(self) -> None: ...
