# grade_id: rmsprop_step
# expect: Your update produced NaN
class RMSprop(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, maximize=False):
        for name, value in [("lr", lr), ("alpha", alpha), ("eps", eps),
                            ("weight_decay", weight_decay), ("momentum", momentum)]:
            if value < 0:
                raise ValueError(f"Invalid {name}: {value}")
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                        momentum=momentum, centered=centered, maximize=maximize)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            alpha, eps, mu = group["alpha"], group["eps"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = -p.grad if group["maximize"] else p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["square_avg"] = torch.zeros_like(p)
                    state["grad_avg"] = torch.zeros_like(p)
                    state["momentum_buffer"] = torch.zeros_like(p)
                v, m, b = state["square_avg"], state["grad_avg"], state["momentum_buffer"]
                g = g + group["weight_decay"] * p
                v.mul_(alpha).add_(g, alpha=1 - alpha)
                if group["centered"]:
                    m.mul_(alpha).add_(g, alpha=1 - alpha)
                    s = (v - m * m).sqrt() + eps
                else:
                    s = v.sqrt() + eps
                if mu > 0:
                    b.mul_(mu).add_(g / s)
                    p.add_(b, alpha=-group["lr"])
                else:
                    p.add_(g / s, alpha=-group["lr"])
        return loss
