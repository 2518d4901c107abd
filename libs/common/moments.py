"""Dates and instants as requests carry them: ISO 8601 strings, never numbers.

Pydantic's lax mode reads a number as a Unix timestamp, so `"completed_on": 0` became
1970-01-01. The documents state these fields as strings (`format: date`, `date-time`); these
types make the code say the same.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from pydantic import AwareDatetime, BeforeValidator


def refuse_numbers(value: object) -> object:
    if isinstance(value, int | float):  # bool is an int as well
        raise ValueError("must be an ISO 8601 string, not a number")
    return value


IsoDate = Annotated[date, BeforeValidator(refuse_numbers)]
IsoAwareDatetime = Annotated[AwareDatetime, BeforeValidator(refuse_numbers)]
