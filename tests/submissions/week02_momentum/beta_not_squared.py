# grade_id: best_rates
# expect: β is the rate squared
def gd_best(eigenvalues):
    lo, hi = min(eigenvalues), max(eigenvalues)
    kappa = hi / lo
    return 2.0 / (lo + hi), (kappa - 1.0) / (kappa + 1.0)


def heavy_ball_best(eigenvalues):
    lo, hi = math.sqrt(min(eigenvalues)), math.sqrt(max(eigenvalues))
    rate = (hi - lo) / (hi + lo)
    return (2.0 / (lo + hi)) ** 2, rate, rate
