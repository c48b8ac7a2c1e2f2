"""Item ids as text: the one way ids are compared across files, the store and S3."""

from __future__ import annotations

import re

import numpy as np

_INTEGRAL_FLOAT = re.compile(r"^([+-]?\d+)\.0*$")


def normalise_id(value: object) -> str:
    """An item id as the string ids are compared by.

    Surrounding whitespace and a leading ``'`` (a spreadsheet's text marker) are removed,
    and an integral float as a spreadsheet writes it (``"3353265.0"``, ``3353265.0``)
    becomes ``"3353265"``. Ints give their decimal string.

    >>> normalise_id(" '3353265.0"), normalise_id(42)
    ('3353265', '42')
    """
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    text = str(value).strip()
    if text.startswith("'"):
        text = text[1:].strip()
    match = _INTEGRAL_FLOAT.match(text)
    return match.group(1) if match else text
