# grade_id: loss_scaler
# expect: the scale grows after a skipped step
class LossScaler:
    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, enabled=True):
        self._scale = float(init_scale)
        self.growth_factor = growth_factor
        self.backoff_factor = backoff_factor
        self.growth_interval = growth_interval
        self.enabled = enabled
        self._steps = 0
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
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        for grad in grads:
            grad.mul_(1.0 / self._scale)
        self._found_inf = any(not torch.isfinite(grad).all() for grad in grads)
        self._unscaled = True

    def step(self, optimizer):
        if not self.enabled:
            return optimizer.step()
        if not self._unscaled:
            self.unscale_(optimizer)
        if self._found_inf:
            return None
        return optimizer.step()

    def update(self):
        if not self.enabled:
            return
        # count every iteration; grow every growth_interval of them
        self._steps += 1
        if self._found_inf:
            self._scale *= self.backoff_factor
        if self._steps % self.growth_interval == 0:
            self._scale *= self.growth_factor
        self._found_inf = False
        self._unscaled = False
