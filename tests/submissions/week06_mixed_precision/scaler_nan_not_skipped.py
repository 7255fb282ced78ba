# grade_id: loss_scaler
# expect: a NaN gradient goes through
class LossScaler:
    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, enabled=True):
        self._scale = float(init_scale)
        self.growth_factor = growth_factor
        self.backoff_factor = backoff_factor
        self.growth_interval = growth_interval
        self.enabled = enabled
        self._tracker = 0
        self._found_inf = False
        self._unscaled = False

    def get_scale(self):
        return self._scale if self.enabled else 1.0

    def scale(self, loss):
        return loss * self._scale if self.enabled else loss

    @torch.no_grad()
    def unscale_(self, optimizer):
        if not self.enabled:
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.div_(self._scale)
                    if torch.isinf(p.grad).any():
                        self._found_inf = True
        self._unscaled = True

    def step(self, optimizer):
        if not self.enabled:
            return optimizer.step()
        if not self._unscaled:
            self.unscale_(optimizer)
        if not self._found_inf:
            return optimizer.step()

    def update(self):
        if not self.enabled:
            return
        if self._found_inf:
            self._scale *= self.backoff_factor
            self._tracker = 0
        else:
            self._tracker += 1
            if self._tracker == self.growth_interval:
                self._scale *= self.growth_factor
                self._tracker = 0
        self._found_inf = False
        self._unscaled = False
