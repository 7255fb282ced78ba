"""The course's hidden checks, in two sides kept apart by the grading sandbox.

- The **student side** runs with the student's code, in the sandbox: ``core.harness``
  (``hand_in``, what a hidden test cell calls), ``core.produce`` and each week's
  ``produce*.py`` (run the student's code on a check's inputs and return numbers),
  ``core.runs`` and ``core.torch_stubs``. It holds no expected values, tolerances or mistake
  texts: a student can read it.
- The **trusted side** decides the points and never runs student code: ``core.checks``
  (parts, plans, verdicts), the shared judges in ``core``, and each week's ``checks.py``,
  ``cases.py`` and ``mistakes.py``.

One subpackage per week (``week01``, ...), with the same file roles in each; CONTRIBUTING.md
walks through Week 1. Nothing of this package is released to students.
"""
