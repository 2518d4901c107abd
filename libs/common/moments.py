"""Dates and instants as requests carry them: ISO 8601 strings, never numbers.

Pydantic's lax mode reads a number, or a string of digits, as a Unix timestamp: `"completed_on":
0` became 1970-01-01, and a CSV cell `20261206` 1970-08-23. The documents state these fields as
ISO 8601 strings (`format: date`, `date-time`); these types make the code say the same.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated

from pydantic import AwareDatetime, BeforeValidator

_NUMBER = re.compile(r"\s*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*")


def refuse_numbers(value: object) -> object:
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError("must be an ISO 8601 string, not a number")  # bool is an int too
    return value


IsoDate = Annotated[date, BeforeValidator(refuse_numbers)]
IsoAwareDatetime = Annotated[AwareDatetime, BeforeValidator(refuse_numbers)]
