# grade_id: clip_grad_norm
# expect: compute the norm and scale the gradients yourself
from torch.nn.utils import clip_grad_norm_


def clip_grad_norm(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    return clip_grad_norm_(parameters, max_norm, norm_type, error_if_nonfinite)
