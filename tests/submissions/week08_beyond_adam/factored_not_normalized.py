# grade_id: factored_second_moment
# expect: counts the overall mean of grad² twice
def factored_second_moment(row_var, col_var, grad, one_minus_beta2, eps1):
    g2 = grad**2
    row_var.lerp_(g2.mean(dim=-1, keepdim=True), one_minus_beta2)
    col_var.lerp_(g2.mean(dim=-2, keepdim=True), one_minus_beta2)
    return row_var @ col_var
