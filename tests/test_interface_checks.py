"""The shared constructor checks: what a student's ValueError must look like."""

from __future__ import annotations

import pytest
from course_grading.compare import CheckFailed
from course_grading.interface_checks import expect_value_error


def _raise(exc: Exception) -> None:
    raise exc


def test_a_value_error_naming_the_parameter_passes() -> None:
    expect_value_error("SGD(lr=-1)", lambda: _raise(ValueError("Invalid lr: -1")), ("lr",))


def test_a_message_that_names_nothing_fails() -> None:
    with pytest.raises(CheckFailed, match=r"does not name the parameter \('lr'\)"):
        expect_value_error("SGD(lr=-1)", lambda: _raise(ValueError("bad value")), ("lr",))


def test_another_exception_fails() -> None:
    with pytest.raises(CheckFailed, match="should raise ValueError, not AssertionError"):
        expect_value_error("SGD(lr=-1)", lambda: _raise(AssertionError("lr")), ("lr",))


def test_no_exception_fails_and_says_the_rule() -> None:
    with pytest.raises(CheckFailed, match=r"SGD\(lr=-1\) should raise ValueError \(lr < 0\)"):
        expect_value_error("SGD(lr=-1)", lambda: None, ("lr",), rule="lr < 0")


def test_without_names_any_value_error_passes() -> None:
    expect_value_error("an empty parameter list", lambda: _raise(ValueError("empty")))
