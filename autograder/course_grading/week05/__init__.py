"""Week 5: schedules, gradient clipping, initialization, early stopping.

Exercise ids (grade ids in the notebook start with them): ``warmup_cosine_lr``, ``step_lr``,
``lambda_schedule``, ``clip_grad_norm``, ``init_std``, ``early_stopping``.

``produce`` runs with the student's code (in the sandbox while grading); ``checks``, ``cases``
and ``mistakes`` are the trusted side: the cases, the references (from torch, computed in the
grading process) and the verdicts.
"""
