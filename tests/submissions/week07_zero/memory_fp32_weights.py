# grade_id: model_state_memory
# expect: parameters and gradients are counted at 4 bytes each
def model_state_bytes(n_params, n_devices, stage, k=12):
    """Bytes of parameters, gradients and optimizer state on each of n_devices devices."""
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"stage must be 0, 1, 2 or 3, got {stage!r}")
    if n_devices < 1:
        raise ValueError(f"n_devices must be at least 1, got {n_devices!r}")
    if n_params < 0:
        raise ValueError(f"n_params must not be negative, got {n_params!r}")
    params, grads, states = 4 * n_params, 4 * n_params, k * n_params  # fp32 everywhere
    if stage >= 1:
        states = states / n_devices
    if stage >= 2:
        grads = grads / n_devices
    if stage >= 3:
        params = params / n_devices
    return params + grads + states
