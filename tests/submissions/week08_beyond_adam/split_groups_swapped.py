# grade_id: split_params
# expect: the two lists are swapped
def split_params(model):
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    hidden_weights = [m.weight for m in linears[:-1]]
    muon_params, adamw_params = [], []
    for p in model.parameters():
        if any(p is w for w in hidden_weights):
            muon_params.append(p)
        else:
            adamw_params.append(p)
    return adamw_params, muon_params
