"""The passes the worker can run, by `type`. Each file holds one pass: its config (from
app.schemas.passes) beside its run."""

from workers.passes.base import Pass, PassContext
from workers.passes.convert import ConvertPass
from workers.passes.distill import DistillPass
from workers.passes.lowrank import LowRankPass
from workers.passes.optimize import OptimizePass
from workers.passes.prune import PrunePass
from workers.passes.quantize import QuantizePass

REGISTRY: dict[str, type[Pass]] = {
    p.type: p for p in (ConvertPass, OptimizePass, QuantizePass, PrunePass, LowRankPass, DistillPass)
}

__all__ = ["REGISTRY", "Pass", "PassContext"]
