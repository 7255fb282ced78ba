# grade_id: split_params
# expect: that Muon cannot take
def split_params(model):
    muon_params, adamw_params = [], []
    names = [name for name, _ in model.named_parameters()]
    output = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    for name, p in model.named_parameters():
        module = name.rsplit(".", 1)[0] if "." in name else ""
        is_embedding = isinstance(dict(model.named_modules())[module], nn.Embedding)
        if name.endswith("weight") and module != output and not is_embedding:
            muon_params.append(p)
        else:
            adamw_params.append(p)
    return muon_params, adamw_params
