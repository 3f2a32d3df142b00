"""Classic Load Balancers as AWS runs them, patched into moto's ELB model
(imported by aws_harness.py, which calls `register`, `begin_drain`,
`drain_until` and `forget` from its Auto Scaling model).

moto registers an Auto Scaling group's instances with its Classic Load
Balancers at launch, reports every running registered instance InService at
once, and removes a deregistered instance on the spot. AWS does none of that:

https://docs.aws.amazon.com/elasticloadbalancing/latest/classic/config-conn-drain.html
  "While in-flight requests are being served, the load balancer reports the
   state of a de-registering instance as InService: Instance deregistration
   currently in progress. When the de-registering instance is finished
   serving all in-flight requests, or when the maximum timeout limit is
   reached, the load balancer reports the instance state as OutOfService:
   Instance is not currently registered with the LoadBalancer."
  "If your instances are part of an Auto Scaling group and connection
   draining is enabled for your load balancer, Amazon EC2 Auto Scaling waits
   for the in-flight requests to complete, or for the maximum timeout to
   expire, before terminating instances due to a scaling event or health
   check replacement."
  (The harness has no requests in flight to finish early: a deregistered
   instance drains for the whole timeout, as one with a long-lived
   connection does.)
https://docs.aws.amazon.com/elasticloadbalancing/latest/classic/elb-healthchecks.html
  "The load balancer ... routes requests only to the healthy instances";
  an instance is InService after HealthyThreshold consecutive successful
  checks, Interval seconds apart; until then DescribeInstanceHealth says
  OutOfService, "Instance registration is still in progress."
https://docs.aws.amazon.com/autoscaling/ec2/userguide/attach-load-balancer-asg.html
  Auto Scaling registers an instance when it enters InService (the Auto
  Scaling model in aws_harness.py calls `register` then).

Recorded for tests (read with POST /_harness/report {"account": ...}):
  early_terminations: instances repave asked Auto Scaling to terminate while
  a Classic Load Balancer still routed to them or was still draining them.
"""

import time

from moto.elb import models as elb_models
from moto.elb import responses as elb_responses

# account -> [instance ids terminated before their drain finished]
EARLY_TERMINATIONS: dict = {}


def now() -> float:
    return time.time()


def _state(lb):
    if not hasattr(lb, "_harness_registered_at"):
        lb._harness_registered_at = {}  # instance id -> time
        lb._harness_draining = {}  # instance id -> until
    return lb


def _finish_drains(lb) -> None:
    t = now()
    for i, until in list(_state(lb)._harness_draining.items()):
        if t >= until:
            del lb._harness_draining[i]


def draining_timeout(lb) -> float:
    # moto keeps the request's own keys ("Enabled", "Timeout") and adds its
    # default "timeout": 300 beside them; the request's value wins.
    cd = lb.attributes.get("connection_draining") or {}
    enabled = str(cd.get("Enabled", cd.get("enabled", False))).lower() == "true"
    return float(cd.get("Timeout", cd.get("timeout", 300))) if enabled else 0.0


def _register_instances(self, load_balancer_name, instance_ids, from_autoscaling=False):
    lb = _state(self.get_load_balancer(load_balancer_name))
    ids = list(instance_ids)
    for i in ids:
        lb._harness_draining.pop(i, None)
        if i not in lb.instance_ids:
            lb._harness_registered_at[i] = now()
            lb.instance_sparse_ids.append(i)
    return lb


def _deregister_instances(self, load_balancer_name, instance_ids, from_autoscaling=False):
    lb = _state(self.get_load_balancer(load_balancer_name))
    for i in list(instance_ids):
        begin_drain(lb, i)
    return lb


def begin_drain(lb, instance_id: str) -> float:
    """Take the instance out of rotation; returns when its drain ends."""
    _state(lb)
    _finish_drains(lb)
    if instance_id in lb._harness_draining:
        return lb._harness_draining[instance_id]
    if instance_id not in lb.instance_ids:
        return now()
    lb.instance_sparse_ids = [x for x in lb.instance_sparse_ids if x != instance_id]
    lb.instance_autoscaling_ids = [x for x in lb.instance_autoscaling_ids if x != instance_id]
    lb._harness_registered_at.pop(instance_id, None)
    until = now() + draining_timeout(lb)
    if until > now():
        lb._harness_draining[instance_id] = until
    return until


def drain_until(lb, instance_id: str):
    """When the instance's drain ends: None if it is neither registered nor
    draining; `inf` while it is still registered (in rotation)."""
    _state(lb)
    _finish_drains(lb)
    if instance_id in lb.instance_ids:
        return float("inf")
    return lb._harness_draining.get(instance_id)


def forget(lb, instance_id: str) -> None:
    _state(lb)
    lb.instance_sparse_ids = [x for x in lb.instance_sparse_ids if x != instance_id]
    lb.instance_autoscaling_ids = [x for x in lb.instance_autoscaling_ids if x != instance_id]
    lb._harness_registered_at.pop(instance_id, None)


def record_early_termination(account: str, instance_id: str) -> None:
    EARLY_TERMINATIONS.setdefault(account, []).append(instance_id)


def _health(lb, instance_id: str, ec2_backend, broken) -> dict:
    entry = {"InstanceId": instance_id, "ReasonCode": "N/A", "Description": "N/A"}
    if instance_id in lb._harness_draining:
        return {**entry, "State": "InService", "Description": "Instance deregistration currently in progress."}
    if instance_id not in lb.instance_ids:
        return {**entry, "State": "OutOfService",
                "Description": "Instance is not currently registered with the LoadBalancer."}
    instance = ec2_backend.get_instance_by_id(instance_id)
    if instance is None or instance.state != "running":
        state = instance.state if instance is not None else "terminated"
        return {**entry, "State": "OutOfService", "ReasonCode": "Instance",
                "Description": f"Instance is in {state} state."}
    hc = lb.health_check
    interval = float(getattr(hc, "interval", None) or 30)
    bad = broken(instance)
    threshold = int((getattr(hc, "unhealthy_threshold", None) if bad else getattr(hc, "healthy_threshold", None))
                    or (2 if bad else 10))
    if now() - lb._harness_registered_at.get(instance_id, 0.0) < threshold * interval:
        return {**entry, "State": "OutOfService", "ReasonCode": "ELB",
                "Description": "Instance registration is still in progress."}
    if bad:
        return {**entry, "State": "OutOfService", "ReasonCode": "Instance",
                "Description": "Instance has failed at least the UnhealthyThreshold number of health checks consecutively."}
    return {**entry, "State": "InService"}


def install(broken) -> None:
    """`broken(instance)`: the application model's verdict on an instance."""

    def describe_instance_health(self, lb_name, instances):
        lb = self.get_load_balancer(lb_name)
        if lb is None:
            raise elb_models.NoActiveLoadBalancerFoundError(name=lb_name)
        _state(lb)
        _finish_drains(lb)
        ids = [i["InstanceId"] for i in instances] or (list(lb.instance_ids) + list(lb._harness_draining))
        ec2_backend = elb_models.ec2_backends[self.account_id][self.region_name]
        return [_health(lb, i, ec2_backend, broken) for i in ids]

    def describe_instance_health_response(self):
        lb_name = self._get_param("LoadBalancerName")
        instances = self._get_param("Instances", [])
        states = self.elb_backend.describe_instance_health(lb_name, instances)
        return elb_responses.ActionResult({"InstanceStates": states})

    elb_models.ELBBackend.register_instances = _register_instances
    elb_models.ELBBackend.deregister_instances = _deregister_instances
    elb_models.ELBBackend.describe_instance_health = describe_instance_health
    elb_responses.ELBResponse.describe_instance_health = describe_instance_health_response
