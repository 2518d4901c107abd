"""The models of request bodies (and bulk import rows), for tests that hold every one of them to
a rule: a new body is checked the day it is written."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator

from pydantic import BaseModel

# Every model that refuses unknown fields is a request body (or a row of a bulk import).
REQUEST_MODULES = (
    "teams.api",
    "teams.api_units",
    "teams.api_identity",
    "teams.rows",
    "activities.api",
    "activities.domain",
    "scoring.api.scores",
    "scoring.api.rounds",
    "notifications.api",
    "notifications.domain",
)


def request_models() -> Iterator[type[BaseModel]]:
    for name in REQUEST_MODULES:
        for _, model in inspect.getmembers(importlib.import_module(name), inspect.isclass):
            if (
                issubclass(model, BaseModel)
                and model.__module__ == name
                and model.model_config.get("extra") == "forbid"
            ):
                yield model
