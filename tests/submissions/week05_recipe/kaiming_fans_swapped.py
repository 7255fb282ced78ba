# grade_id: init_std
# expect: fan_in and fan_out are swapped
def fans(weight):
    receptive_field = math.prod(weight.shape[2:])
    return weight.shape[0] * receptive_field, weight.shape[1] * receptive_field


def xavier_std(weight, gain=1.0):
    fan_in, fan_out = fans(weight)
    return gain * math.sqrt(2.0 / (fan_in + fan_out))


def kaiming_std(weight, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    fan_in, fan_out = fans(weight)
    fan = fan_in if mode == "fan_in" else fan_out
    return torch.nn.init.calculate_gain(nonlinearity, a) / math.sqrt(fan)
