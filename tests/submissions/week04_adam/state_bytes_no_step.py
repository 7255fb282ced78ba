# grade_id: state_bytes
# expect: The step counter is missing
def state_bytes(name, numel, dtype=torch.float32, **hyperparameters):
    size = dtype.itemsize
    if name == "SGD":
        return numel * size if hyperparameters.get("momentum", 0) else 0
    if name == "RMSprop":
        n = 1 + (hyperparameters.get("momentum", 0) > 0) + hyperparameters.get("centered", False)
        return n * numel * size
    n = 3 if hyperparameters.get("amsgrad") else 2
    return n * numel * size
