"""Week 8: Newton–Schulz, Muon, the Muon/AdamW split, Adafactor's factored second moment, the
bytes of optimizer state.

Exercise ids: ``newton_schulz``, ``muon``, ``split_params``, ``factored_second_moment``,
``optimizer_state_bytes``. ``produce`` runs with the student's code (in the sandbox while
grading); ``cases``, ``checks`` and ``mistakes`` are the trusted side.
"""
