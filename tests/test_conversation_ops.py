"""Every request the engine can yield (core.conversation.ops) has the runner's answer: the executor
picks it from an explicit table, so a new operation without a handler fails here, not in a turn."""

from __future__ import annotations

import dataclasses
import inspect
from typing import get_args

from core.conversation import ops
from core.conversation.executor import OP_HANDLERS


def _requests_in_ops_module() -> set[type]:
    """The classes ops defines as requests: dataclasses whose docstring says what they answer ("-> ...")."""
    return {cls for _, cls in inspect.getmembers(ops, inspect.isclass)
            if cls.__module__ == ops.__name__ and dataclasses.is_dataclass(cls)
            and (cls.__doc__ or "").lstrip().startswith("->")}


def test_every_operation_has_a_handler_and_every_handler_an_operation() -> None:
    operations = set(get_args(ops.Op))
    assert operations, "ops.Op lists the operations"
    assert sorted(c.__name__ for c in operations - OP_HANDLERS.keys()) == [], "operations without a handler"
    assert sorted(c.__name__ for c in OP_HANDLERS.keys() - operations) == [], "handlers of no operation"


def test_every_request_class_in_ops_is_an_operation() -> None:
    # A request written in ops.py but left out of the Op union would escape the test above.
    assert sorted(c.__name__ for c in _requests_in_ops_module() - set(get_args(ops.Op))) == []


def test_each_handler_takes_the_operation_it_is_listed_for() -> None:
    for operation, handler in OP_HANDLERS.items():
        annotation = inspect.signature(handler).parameters["op"].annotation
        assert annotation == f"ops.{operation.__name__}", (operation.__name__, handler.__name__)
