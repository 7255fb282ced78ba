# grade_id: optimizer_state_bytes
# expect: keeps no step count
def optimizer_state_bytes(name, shape, dtype=torch.float32):
    n = math.prod(shape)
    size = dtype.itemsize
    if name in ("Adam", "AdamW"):
        return 2 * n * size + 4
    if name == "Adafactor":
        if len(shape) >= 2:
            rows = math.prod(shape[:-1])
            cols = math.prod(shape[:-2]) * shape[-1]
            return (rows + cols) * size + 4
        return n * size + 4
    if name == "Muon":
        if len(shape) != 2:
            raise ValueError("Muon only supports 2D parameters")
        return n * size + 4
    raise ValueError(name)
