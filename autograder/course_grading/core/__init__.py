"""What every week's grading shares, on both sides of the sandbox.

Student side (copied into the sandbox, run with the student's code): ``harness`` (what
hidden test cells call), ``produce`` (shared producers), ``runs`` (the training runs both
sides perform), ``torch_stubs`` (switching off parts of torch). Trusted side (never in the
sandbox): ``checks`` (parts, plans and verdicts), ``compare``, ``mistakes``, ``references``,
``interface``, ``optimizers``, ``buffers``, ``tables`` (an optimizer exercise's cells from its
case table), ``torch_hiding``, and ``local`` (a whole check in one process,
for tests and instructors).
"""
