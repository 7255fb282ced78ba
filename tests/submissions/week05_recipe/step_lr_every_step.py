# grade_id: step_lr
# expect: the lr is multiplied by gamma at every step
def step_lr(step, *, lr, step_size, gamma=0.1):
    """The learning rate of step `step`: lr, multiplied by gamma once every step_size steps."""
    return lr * gamma**step
