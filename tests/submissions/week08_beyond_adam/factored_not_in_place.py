# grade_id: factored_second_moment
# expect: must be updated in place
def factored_second_moment(row_var, col_var, grad, one_minus_beta2, eps1):
    g2 = grad**2
    row_var = torch.lerp(row_var, g2.mean(dim=-1, keepdim=True), one_minus_beta2)
    col_var = torch.lerp(col_var, g2.mean(dim=-2, keepdim=True), one_minus_beta2)
    return row_var @ col_var / row_var.mean(dim=-2, keepdim=True).clamp(min=eps1)
