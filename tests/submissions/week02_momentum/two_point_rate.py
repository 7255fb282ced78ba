# grade_id: measured_rate
# expect: from two points only
def distances_to_minimum(trajectory, landscape):
    return np.sqrt(((trajectory.path - np.array(landscape.minimum)) ** 2).sum(axis=1))


def measured_rate(distances, skip=0):
    d = np.asarray(distances, dtype=float)
    steps = len(d) - 1 - skip
    return float((d[-1] / d[skip]) ** (1.0 / steps))
