# grade_id: factored_second_moment
# expect: row and column averages are swapped
def factored_second_moment(row_var, col_var, grad, one_minus_beta2, eps1):
    g2 = grad**2
    row_var.lerp_(g2.mean(dim=-2, keepdim=True).mT, one_minus_beta2)
    col_var.lerp_(g2.mean(dim=-1, keepdim=True).mT, one_minus_beta2)
    row_mean = row_var.mean(dim=-2, keepdim=True)
    return row_var @ col_var / torch.clamp(row_mean, min=eps1)
