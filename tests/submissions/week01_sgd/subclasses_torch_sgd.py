# grade_id: sgd_step
# expect: is, or extends, torch.optim.SGD
class SGD(torch.optim.SGD):
    pass
