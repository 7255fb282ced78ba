"""Week 2: SGD with momentum, and the convergence rates of Distill's "Why Momentum Really Works".

Exercise ids (grade ids in the notebook start with them): ``sgd_momentum``, ``best_rates``,
``measured_rate``. ``produce`` runs with the student's code (in the sandbox while grading);
``checks``, ``cases`` and ``mistakes`` are the trusted side: the cases, the references and the
verdicts.
"""
