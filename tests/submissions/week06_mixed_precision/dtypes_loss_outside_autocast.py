# grade_id: record_dtypes
# expect: the loss was computed outside the autocast block
def record_dtypes(model, X, y, dtype=torch.bfloat16, device_type="cpu"):
    record = {"parameters": {n: p.dtype for n, p in model.named_parameters()}, "activations": {}}
    hooks = [
        module.register_forward_hook(
            lambda m, i, out, name=name: record["activations"].__setitem__(name, out.dtype)
        )
        for name, module in model.named_modules()
        if name
    ]
    with torch.autocast(device_type, dtype=dtype):
        logits = model(X)
    loss = F.cross_entropy(logits, y)
    for h in hooks:
        h.remove()
    record["loss"] = loss.dtype
    loss.backward()
    record["gradients"] = {
        n: None if p.grad is None else p.grad.dtype for n, p in model.named_parameters()
    }
    return record
