"""Week 7: the ZeRO memory formula and a ZeRO-1 sharded optimizer.

Exercise ids (grade ids in the notebook start with them): ``model_state_memory`` and ``zero1``.
The ZeRO-1 answer is a module file written by a ``%%writefile`` cell; the test cells hand in its
path. ``produce`` loads it in the kernel and launches the ranks, which run ``produce_ranks``;
``checks``, ``cases`` and ``mistakes`` are the trusted side: the cases, the unsharded reference
runs and the verdicts.
"""
