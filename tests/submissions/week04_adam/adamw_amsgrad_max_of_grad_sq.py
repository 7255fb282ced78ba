# grade_id: adamw
# expect: amsgrad keeps the maximum of the squared gradient
class AdamW(Adam):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize)

    def update(self, p, grad, state, group):
        beta1, beta2 = group["betas"]
        if len(state) == 0:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = torch.zeros_like(p)
        g = -grad if group["maximize"] else grad
        p.mul_(1 - group["lr"] * group["weight_decay"])
        state["step"] += 1
        t = state["step"].item()
        state["exp_avg"].mul_(beta1).add_(g, alpha=1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
        v = state["exp_avg_sq"]
        if group["amsgrad"]:
            torch.maximum(state["max_exp_avg_sq"], g * g, out=state["max_exp_avg_sq"])
            v = state["max_exp_avg_sq"]
        denom = (v / (1 - beta2**t)).sqrt() + group["eps"]
        p.addcdiv_(state["exp_avg"], denom, value=-group["lr"] / (1 - beta1**t))
