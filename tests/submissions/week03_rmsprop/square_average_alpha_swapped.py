# grade_id: square_average
# expect: alpha and 1 - alpha are swapped
def square_average(grads, alpha):
    v = torch.zeros_like(grads[0])
    out = []
    for g in grads:
        v = (1 - alpha) * v + alpha * g**2
        out.append(v)
    return out
