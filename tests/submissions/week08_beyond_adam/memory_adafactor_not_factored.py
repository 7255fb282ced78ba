# grade_id: optimizer_state_bytes
# expect: does not keep a full second moment
def optimizer_state_bytes(name, shape, dtype=torch.float32):
    n = math.prod(shape)
    size = dtype.itemsize
    if name in ("Adam", "AdamW"):
        return 2 * n * size + 4
    if name == "Adafactor":
        return n * size + 4
    if name == "Muon":
        if len(shape) != 2:
            raise ValueError("Muon only supports 2D parameters")
        return n * size
    raise ValueError(name)
