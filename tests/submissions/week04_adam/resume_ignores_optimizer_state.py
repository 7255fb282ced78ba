# grade_id: resume_training
# expect: Resuming must restore both state_dicts
def train_resumed(make_model, make_optimizer, batches, stop_at, path, load_optimizer_state=True):
    losses = []
    model = make_model()
    optimizer = make_optimizer(model.parameters())
    for X, y in batches[:stop_at]:
        losses.append(train_step(model, optimizer, X, y))
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)
    model = make_model()
    optimizer = make_optimizer(model.parameters())
    model.load_state_dict(torch.load(path)["model"])
    for X, y in batches[stop_at:]:
        losses.append(train_step(model, optimizer, X, y))
    return losses
