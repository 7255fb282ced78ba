"""Week 4: Adam, AdamW, checkpoints that resume exactly, optimizer memory.

Exercise ids (grade ids in the notebook start with them): ``adam``, ``adamw``,
``resume_training``, ``state_bytes``. ``produce`` runs with the student's code (in the sandbox
while grading); ``checks``, ``cases`` and ``mistakes`` are the trusted side: the cases, the
references and the verdicts.
"""
