"""Whole numbers read from request text: headers, query strings, form fields."""

from __future__ import annotations


def whole_number(text: str, *, max_digits: int = 18) -> int | None:
    """``text`` as a non-negative integer when it is 1 to ``max_digits`` ASCII digits, else
    ``None``. (``str.isdigit`` alone also takes superscripts such as ``"²"``, which a
    Latin-1 header can carry and ``int`` refuses, and other scripts' digits; and ``int``
    refuses more than 4,300 digits.)"""
    if 0 < len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
    return None
