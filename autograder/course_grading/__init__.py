"""Hidden checks for the course, imported by the hidden test cells when nbgrader grades.

This package never ships to students: the release and the student edition contain only the
one-line calls into it, so the cases, tolerances and the catalogue of typical mistakes stay
private. One module per week (``week01``, ...) plus the shared machinery:

- ``runs``: run an optimizer on a real model for many steps and record every parameter;
- ``reference``: the same runs for ``torch.optim`` in a fresh process the submission cannot touch;
- ``compare``: find the first step and parameter where two runs differ, and say so;
- ``mistakes``: typical wrong update rules, to name the mistake a submission makes;
- ``guards``: refuse optimizers that are, or call into, ``torch.optim``.
"""
