# grade_id: ulp
# expect: that is eps * |x|, a relative size
def ulp(x, dtype):
    return torch.finfo(dtype).eps * abs(x)
