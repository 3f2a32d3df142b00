"""Warm pools: instances launched ahead of need, drawn in on scale-out.

moto keeps a warm pool's configuration and nothing else (DescribeWarmPool
answers no instances, a scale-out always launches). AWS, from
https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-warm-pools.html
and .../warm-pool-instance-lifecycle.html:
  - "By default, Amazon EC2 Auto Scaling manages the warm pool size as the
    difference between the Auto Scaling group's maximum capacity and its
    desired capacity" (MaxGroupPreparedCapacity replaces the maximum when
    set; MinSize is the least it keeps);
  - pool instances launch from the group's launch template, go through
    Warmed:Pending and wait in Warmed:Stopped / Warmed:Running /
    Warmed:Hibernated (PoolState); they are not members: DescribeWarmPool
    lists them, DescribeAutoScalingGroups does not;
  - "Whenever your application needs to scale out, the Auto Scaling group
    can draw on the warm pool to meet its new desired capacity": a
    scale-out takes ready pool instances first, and they keep the image
    they were launched with; the pool then refills;
  - "Update the instances in a warm pool": a new launch template leaves
    "existing instances ... not affected"; "you can terminate existing
    instances in the warm pool. Amazon EC2 Auto Scaling immediately starts
    launching new instances to replace" them
    (TerminateInstanceInAutoScalingGroup takes pool instances); "an
    instance refresh first replaces InService instances. Then it replaces
    instances in the warm pool";
  - DeleteWarmPool terminates the pool's instances.

Patched: all of the above, with Warmed:Pending and Warmed:Terminating
lasting `member_pending_seconds`. Instance reuse on scale-in and lifecycle
hooks on pool instances are not modelled. Every instance a scale-out draws
from a pool is recorded (`/_harness/report`: warm_pool_draws, with the
image it carried).
"""

from moto.autoscaling import models as asg_models
from moto.autoscaling import responses as asg_responses
from moto.core.responses import ActionResult, EmptyResult

# account -> [{"group", "instance", "image"}] drawn from pools so far.
DRAWS: dict = {}

_now = None
_settings = None
_launch_detached = None  # (group, count) -> new InstanceStates, not members


def install(now, settings, launch_detached) -> None:
    global _now, _settings, _launch_detached
    _now, _settings, _launch_detached = now, settings, launch_detached
    asg_responses.AutoScalingResponse.describe_warm_pool = _describe_warm_pool
    asg_responses.AutoScalingResponse.delete_warm_pool = _delete_warm_pool
    asg_responses.AutoScalingResponse.put_warm_pool = _put_warm_pool


def pool(group) -> list:
    if not hasattr(group, "_harness_warm"):
        group._harness_warm = []
    return group._harness_warm


def _ready_state(group) -> str:
    return "Warmed:" + (group.warm_pool.pool_state or "Stopped")


def _leaving(s) -> bool:
    return s.lifecycle_state == "Warmed:Terminating"


def _wanted(group) -> int:
    wp = group.warm_pool
    prepared = wp.max_group_prepared_capacity
    prepared = group.max_size if prepared is None or int(prepared) == -1 else int(prepared)
    return max(int(wp.min_size or 0), int(prepared) - int(group.desired_capacity or 0))


def draw(group, count: int) -> list:
    """A scale-out of `count`: ready pool instances leave the pool first.
    Returns them (the caller makes them Pending members)."""
    # (getattr: moto sets warm_pool after the group's first scale-out.)
    if getattr(group, "warm_pool", None) is None or count <= 0:
        return []
    ready = [s for s in pool(group) if s.lifecycle_state == _ready_state(group)]
    taken = ready[:count]
    for s in taken:
        pool(group).remove(s)
        DRAWS.setdefault(group.autoscaling_backend.account_id, []).append(
            {"group": group.name, "instance": s.instance.id, "image": s.instance.image_id}
        )
    return taken


def begin_terminate(s) -> None:
    if not _leaving(s):
        s.lifecycle_state = "Warmed:Terminating"
        s._harness_until = _now() + _settings["member_pending_seconds"]


def find(backend, instance_id):
    """(group, state) of a pool instance, or None."""
    for g in backend.autoscaling_groups.values():
        for s in pool(g):
            if s.instance.id == instance_id:
                return g, s
    return None


def stale(group, image: str) -> list:
    """Pool instances not leaving and not on `image`."""
    return [s for s in pool(group) if not _leaving(s) and s.instance.image_id != image]


def filling(group) -> bool:
    return any(s.lifecycle_state == "Warmed:Pending" for s in pool(group))


def tick(group) -> None:
    t = _now()
    for s in list(pool(group)):
        if s.lifecycle_state == "Warmed:Pending" and t >= s._harness_until and group.warm_pool is not None:
            s.lifecycle_state = _ready_state(group)
        elif _leaving(s) and t >= s._harness_until:
            pool(group).remove(s)
            if s.instance.state != "terminated":
                group.autoscaling_backend.ec2_backend.terminate_instances([s.instance.id])
    if group.warm_pool is None:
        for s in pool(group):
            begin_terminate(s)
        return
    kept = [s for s in pool(group) if not _leaving(s)]
    want = _wanted(group)
    if len(kept) < want:
        for s in _launch_detached(group, want - len(kept)):
            s.lifecycle_state = "Warmed:Pending"
            s._harness_until = t + _settings["member_pending_seconds"]
            pool(group).append(s)
    elif len(kept) > want:
        for s in kept[: len(kept) - want]:
            begin_terminate(s)


def _group(self):
    name = self._get_param("AutoScalingGroupName")
    return self.autoscaling_backend.describe_auto_scaling_groups([name])[0]


def _describe_warm_pool(self):
    group = _group(self)
    listed = [s for s in pool(group) if s.instance.state != "terminated"]
    return ActionResult({"WarmPoolConfiguration": group.warm_pool, "Instances": listed})


def _put_warm_pool(self):
    params = self._get_params()
    def number(key):
        v = params.get(key)
        return None if v is None else int(v)
    self.autoscaling_backend.put_warm_pool(
        group_name=params.get("AutoScalingGroupName"),
        max_group_prepared_capacity=number("MaxGroupPreparedCapacity"),
        min_size=number("MinSize"),
        pool_state=params.get("PoolState"),
        instance_reuse_policy=params.get("InstanceReusePolicy"),
    )
    tick(_group(self))
    return EmptyResult()


def _delete_warm_pool(self):
    group = _group(self)
    group.warm_pool = None
    for s in pool(group):
        begin_terminate(s)
    return EmptyResult()
