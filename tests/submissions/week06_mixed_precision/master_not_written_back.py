# grade_id: master_weights
# expect: never written back to the low-precision model
class MasterWeightOptimizer:
    def __init__(self, params, optimizer_cls, **optimizer_kwargs):
        self.params = list(params)
        self.master_params = [p.detach().float().clone() for p in self.params]
        self.optimizer = optimizer_cls(self.master_params, **optimizer_kwargs)

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        for p, master in zip(self.params, self.master_params):
            master.grad = None if p.grad is None else p.grad.float()
        self.optimizer.step()
