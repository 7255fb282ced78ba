# grade_id: adamw
# expect: weight decay is applied twice
class AdamW(Adam):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize)

    def update(self, p, grad, state, group):
        p.mul_(1 - group["lr"] * group["weight_decay"])
        super().update(p, grad, state, group)
