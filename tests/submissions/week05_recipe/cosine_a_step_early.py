# grade_id: warmup_cosine_lr
# expect: the cosine reaches its final value a step early
def warmup_cosine_lr(step, *, peak_lr, final_lr, warmup_steps, total_steps):
    if step < warmup_steps:
        return peak_lr * (step + 1) / (warmup_steps + 1)
    if step >= total_steps - 1:
        return final_lr
    progress = (step - warmup_steps) / (total_steps - 1 - warmup_steps)
    return final_lr + (peak_lr - final_lr) * (1 + math.cos(math.pi * progress)) / 2
