# grade_id: adamw
# expect: AdamW's default weight_decay should be 0.01, as in torch.optim.AdamW
class AdamW(Adam):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize)

    def update(self, p, grad, state, group):
        p.mul_(1 - group["lr"] * group["weight_decay"])
        super().update(p, grad, state, {**group, "weight_decay": 0})
