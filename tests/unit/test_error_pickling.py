"""Refusals cross the pipe from the Meter writer process as operation outcomes: every
``LedgerError`` survives pickling as the same class with the same message and attributes
(including those whose ``__init__`` takes keyword-only arguments)."""

from __future__ import annotations

import inspect
import pickle

import pytest

from ledger.domain import errors
from ledger.domain.errors import FieldError, LedgerError

ERRORS = sorted(
    (cls for cls in vars(errors).values() if inspect.isclass(cls) and issubclass(cls, LedgerError)),
    key=lambda cls: cls.__name__,
)


def _instance(cls: type[LedgerError]) -> LedgerError:
    """``cls`` built with a value for every argument its ``__init__`` requires."""
    required = {
        name: f"{name}-value"
        for name, parameter in inspect.signature(cls).parameters.items()
        if parameter.default is inspect.Parameter.empty
        and parameter.kind in {parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY}
    }
    error = cls(**required)
    error.errors = (FieldError("/amount", "not a decimal"),)
    return error


@pytest.mark.parametrize("cls", ERRORS, ids=lambda cls: cls.__name__)
def test_every_ledger_error_survives_pickling_whole(cls: type[LedgerError]) -> None:
    error = _instance(cls)
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is cls
    assert (back.args, vars(back)) == (error.args, vars(error))


def test_the_keyword_only_errors_are_among_those_checked() -> None:
    assert {errors.BudgetExceeded, errors.ApprovalNotAllowed} <= set(ERRORS)
