%%writefile {ZERO1}
# grade_id: zero1
# expect: never changed from its initial value
"""ZeRO-1: each rank keeps optimizer state for, and updates, only its own shard of parameters."""

import torch
import torch.distributed as dist


def partition_parameters(params, world_size):
    """Split params into world_size shards (lists of the tensors), one per rank, by size.

    Greedy: from the largest parameter to the smallest (by numel; equal sizes keep their
    order), give each to the rank whose shard holds the fewest elements so far (the lowest rank
    on a tie). Every parameter lands in exactly one shard; a shard may be empty.
    """
    params = list(params)
    per_rank = len(params) // world_size
    return [params[r * per_rank : (r + 1) * per_rank] for r in range(world_size)]


class ZeroRedundancyOptimizer(torch.optim.Optimizer):
    """Wraps optimizer_class so that each rank keeps state for, and steps, only its own shard."""

    def __init__(self, params, optimizer_class, **defaults):
        super().__init__(params, defaults)  # self.param_groups: every parameter, as usual
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        all_params = [p for g in self.param_groups for p in g["params"]]
        self.shards = partition_parameters(all_params, self.world_size)
        owned = {id(p) for p in self.shards[self.rank]}
        local_groups = []
        for group in self.param_groups:
            local = {key: value for key, value in group.items() if key != "params"}
            local["params"] = [p for p in group["params"] if id(p) in owned]
            local_groups.append(local)
        self.optim = optimizer_class(local_groups, **defaults)

    def _positions(self):
        """{id(p): the position of p in self.param_groups, counted over all groups}."""
        in_order = (p for group in self.param_groups for p in group["params"])
        return {id(p): i for i, p in enumerate(in_order)}

    @torch.no_grad()
    def step(self, closure=None):
        """Average the gradients, step this rank's shard, send every shard to every rank."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                    p.grad.div_(self.world_size)
        self.optim.step()
        for owner, shard in enumerate(self.shards):
            for p in shard:
                dist.broadcast(p, src=owner)
        return loss

    def state_dict(self):
        """The full state dict on rank 0, None on the other ranks. Every rank must call it."""
        index = self._positions()
        mine = {}
        for p, state in self.optim.state.items():
            mine[index[id(p)]] = {
                key: value.cpu() if torch.is_tensor(value) else value
                for key, value in state.items()
            }
        gathered = [None] * self.world_size if self.rank == 0 else None
        dist.gather_object(mine, gathered, dst=0)
        if self.rank != 0:
            return None
        full_state = {}
        for part in gathered:
            full_state.update(part)
        groups = []
        for group, local in zip(self.param_groups, self.optim.param_groups):
            settings = {key: value for key, value in local.items() if key != "params"}
            settings["params"] = [index[id(p)] for p in group["params"]]
            groups.append(settings)
        return {"state": dict(sorted(full_state.items())), "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Load a full state dict on every rank; each rank keeps the state of its own shard."""
        position = self._positions()
        local = {"state": {}, "param_groups": []}
        count = 0
        for group, saved in zip(self.optim.param_groups, state_dict["param_groups"]):
            first = count
            for p in group["params"]:
                if position[id(p)] in state_dict["state"]:
                    local["state"][count] = state_dict["state"][position[id(p)]]
                count += 1
            settings = {key: value for key, value in saved.items() if key != "params"}
            local["param_groups"].append({**settings, "params": list(range(first, count))})
        self.optim.load_state_dict(local)
        for group, saved in zip(self.param_groups, state_dict["param_groups"]):
            group.update({key: value for key, value in saved.items() if key != "params"})
