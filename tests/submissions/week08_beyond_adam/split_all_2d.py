# grade_id: split_params
# expect: including the embedding and the output layer
def split_params(model):
    muon_params = [p for p in model.parameters() if p.ndim == 2]
    adamw_params = [p for p in model.parameters() if p.ndim != 2]
    return muon_params, adamw_params
