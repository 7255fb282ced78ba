# grade_id: master_weights
# expect: the optimizer updates the low-precision parameters
class MasterWeightOptimizer:
    def __init__(self, params, optimizer_cls, **optimizer_kwargs):
        self.params = list(params)
        self.master_params = [p.detach().float().clone() for p in self.params]
        self.optimizer = optimizer_cls(self.params, **optimizer_kwargs)

    def zero_grad(self):
        self.optimizer.zero_grad()

    @torch.no_grad()
    def step(self):
        self.optimizer.step()
        for p, master in zip(self.params, self.master_params):
            master.copy_(p)
