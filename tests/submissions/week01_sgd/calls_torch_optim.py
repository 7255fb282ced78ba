# grade_id: sgd_step
# expect: the update must be your own code, not torch.optim's
class SGD(Optimizer):
    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate (lr): {lr}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        self._inner = torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, maximize=maximize)
        super().__init__(self._inner.param_groups, {})

    def step(self, closure=None):
        return self._inner.step(closure)
