# grade_id: lambda_schedule
# expect: each step multiplies the current lr instead of the initial one
class LambdaSchedule:
    def __init__(self, optimizer, lr_lambda):
        self.optimizer = optimizer
        self.lr_lambda = lr_lambda
        self.last_step = 0
        for group in optimizer.param_groups:
            group["lr"] *= lr_lambda(0)

    def step(self):
        self.last_step += 1
        for group in self.optimizer.param_groups:
            group["lr"] *= self.lr_lambda(self.last_step)

    def get_last_lr(self):
        return [group["lr"] for group in self.optimizer.param_groups]
