"""mm-review: review Linux mm patches against the lessons of past review threads."""

__version__ = "0.1.0"
