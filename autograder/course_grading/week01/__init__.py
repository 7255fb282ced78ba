"""Week 1: the optimizer interface, SGD, the stable step size, mini-batches.

``produce`` runs with the student's code (in the sandbox while grading); ``checks``, ``cases``
and ``mistakes`` are the trusted side: the cases, the references and the verdicts.
"""
