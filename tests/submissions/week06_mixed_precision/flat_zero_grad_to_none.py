# grade_id: flat_adamw
# expect: the step never sees the gradients
class FlatAdamW(torch.optim.Optimizer):
    """Flat buffers, but zero_grad() is torch.optim.Optimizer's: it sets p.grad to None."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False,
                 differentiable=False, fused=None):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if eps < 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter: {betas}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize)
        super().__init__(params, defaults)
        self.flat = []
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.requires_grad]
            flat_p = torch.cat([p.detach().reshape(-1) for p in ps])
            flat_g = torch.zeros_like(flat_p)
            i = 0
            for p in ps:
                p.data = flat_p[i:i + p.numel()].view_as(p)
                p.grad = flat_g[i:i + p.numel()].view_as(p)
                i += p.numel()
            self.flat.append(dict(p=flat_p, g=flat_g, m=torch.zeros_like(flat_p),
                                  v=torch.zeros_like(flat_p), vmax=torch.zeros_like(flat_p), t=0))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group, buf in zip(self.param_groups, self.flat):
            b1, b2 = group["betas"]
            lr = group["lr"]
            g = -buf["g"] if group["maximize"] else buf["g"]
            buf["t"] += 1
            buf["p"].mul_(1 - lr * group["weight_decay"])
            buf["m"].mul_(b1).add_(g, alpha=1 - b1)
            buf["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
            v = buf["v"]
            if group["amsgrad"]:
                torch.maximum(buf["vmax"], v, out=buf["vmax"])
                v = buf["vmax"]
            bc1 = 1 - b1 ** buf["t"]
            bc2 = 1 - b2 ** buf["t"]
            denom = v.sqrt() / math.sqrt(bc2) + group["eps"]
            buf["p"].addcdiv_(buf["m"], denom, value=-lr / bc1)
        return loss
