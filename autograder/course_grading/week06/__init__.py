"""Week 6: number formats, autocast, loss scaling, master weights, the memory-bound AdamW step.

Exercise ids (grade ids in the notebook start with them): ``ulp``, ``record_dtypes``,
``loss_scaler``, ``master_weights``, ``adamw_traffic``, ``flat_adamw``. ``produce`` runs with
the student's code (in the sandbox while grading); ``checks``, ``cases`` and ``mistakes`` are
the trusted side: the cases, the references and the verdicts.
"""
