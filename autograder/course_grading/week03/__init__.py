"""Week 3: the running average of squared gradients, and RMSprop.

Exercise ids (grade ids in the notebook start with them): ``square_average``, ``rmsprop_step``.
``produce`` runs with the student's code (in the sandbox while grading); ``checks``, ``cases``
and ``mistakes`` are the trusted side: the cases, the references and the verdicts.
"""
