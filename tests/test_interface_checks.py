"""The shared interface judges: what a student's ValueError and signature must look like."""

from __future__ import annotations

import pytest
from course_grading.core.checks import CheckFailed, Part
from course_grading.core.harness import describe_error
from course_grading.core.interface import judge_signature, judge_value_error, signature
from course_grading.core.produce import signature as read_signature


def _error(exc: Exception) -> dict:
    return describe_error(exc)


def test_a_value_error_naming_the_parameter_passes() -> None:
    judge_value_error("SGD(lr=-1)", _error(ValueError("Invalid lr: -1")), ("lr",))


def test_a_message_that_names_nothing_fails() -> None:
    with pytest.raises(CheckFailed, match=r"does not name the parameter \('lr'\)"):
        judge_value_error("SGD(lr=-1)", _error(ValueError("bad value")), ("lr",))


def test_another_exception_fails() -> None:
    with pytest.raises(CheckFailed, match="should raise ValueError, not AssertionError"):
        judge_value_error("SGD(lr=-1)", _error(AssertionError("lr")), ("lr",))


def test_no_exception_fails_and_says_the_rule() -> None:
    with pytest.raises(CheckFailed, match=r"SGD\(lr=-1\) should raise ValueError \(lr < 0\)"):
        judge_value_error("SGD(lr=-1)", None, ("lr",), rule="lr < 0")


def test_without_names_any_value_error_passes() -> None:
    judge_value_error("an empty parameter list", _error(ValueError("empty")))


def _signature_part() -> Part:
    return signature("SGD", {"lr": 1e-3, "maximize": False}, "torch.optim.SGD")


def test_a_signature_with_the_same_defaults_passes() -> None:
    class SGD:
        def __init__(self, params, lr=0.001, *, maximize=False) -> None: ...

    judge_signature(_signature_part(), read_signature(SGD))


def test_a_wrong_or_missing_default_fails() -> None:
    class SGD:
        def __init__(self, params, lr=0.01) -> None: ...

    with pytest.raises(CheckFailed, match="default lr should be 0.001, as in torch.optim.SGD"):
        judge_signature(_signature_part(), read_signature(SGD))


def test_an_unreadable_signature_fails_with_a_clear_message() -> None:
    unreadable = min  # a built-in whose signature inspect cannot read
    with pytest.raises(CheckFailed, match="the signature of SGD cannot be read"):
        judge_signature(_signature_part(), read_signature(unreadable))
