#!/usr/bin/env python3
"""repave's AWS-behaviour harness: a moto server with AWS's documented
behaviour patched into moto's models.

moto answers instantly and accepts almost anything; AWS does neither. Every
AWS test of repave runs against this server (started by `scripts/moto.sh`,
which `scripts/test` calls), so a defect that AWS would expose fails a test
here. Each patch below cites the AWS documentation it follows. Timings are
read from the resources the tests create (target group health checks,
deregistration delay, lifecycle hook heartbeats), never hard-coded, so a test
that gives its target group 1 s health checks runs in seconds.

Patched behaviour:
  - target health: `initial` until HealthyThresholdCount x
    HealthCheckIntervalSeconds after registration, then `healthy` (or
    `unhealthy` for an instance whose image breaks the application);
  - Classic Load Balancers (classic_elb.py): members registered at
    InService, OutOfService until HealthyThreshold x Interval, a
    deregistered instance InService "deregistration currently in progress"
    for the connection-draining timeout, Auto Scaling waiting for it;
  - deregistration: `draining` for `deregistration_delay.timeout_seconds`,
    listed by DescribeTargetHealth, then gone;
  - Auto Scaling registers an instance with its target groups when it enters
    InService (not at launch, and never again after it was deregistered), and
    a terminated member is deregistered and drained before it is terminated;
  - launch and termination lifecycle hooks hold instances in Pending:Wait /
    Terminating:Wait until CompleteLifecycleAction or the heartbeat timeout;
  - SetDesiredCapacity, UpdateAutoScalingGroup and
    TerminateInstanceInAutoScalingGroup refuse a desired capacity outside
    MinSize..MaxSize with AWS's ValidationError messages;
  - HealthCheckGracePeriod defaults to 0 and DefaultInstanceWarmup is kept
    (moto defaults the first to 300 and drops the second);
  - CreateImage: the image is `pending` for a few seconds and invisible to
    DescribeImages for the first moment (InvalidAMIID.NotFound by id);
    names are unique (InvalidAMIName.Duplicate); snapshot tag
    specifications are applied;
  - a new instance (RunInstances, or launched by Auto Scaling) is invisible
    to DescribeInstances for the first moment; RunInstances is idempotent
    by ClientToken;
  - CreateLaunchTemplateVersion honours SourceVersion;
  - under moto's IAM enforcement, SigV4 is verified over the body as
    received, and JSON services answer access denied in JSON
    (iam_enforcement.py);
  - Instance Refresh (StartInstanceRefresh, DescribeInstanceRefreshes,
    CancelInstanceRefresh) with AWS's validation and a replacement model
    that honours ScaleInProtectedInstances (Ignore by default, Refresh,
    Wait);
  - accounts can be told to refuse CreateLaunchConfiguration, as accounts
    created after 2023-10-01 do;
  - DescribeImages reports PlatformDetails ("Windows" / "Linux/UNIX");
  - SendCommand runs on the InstanceIds it names (moto adds every
    instance);
  - Patch Manager (ssm_patching.py): AWS-RunPatchBaseline Scan / Install
    against the instance's patch group baseline, patch states per instance
    inherited through images, DescribeInstancePatches,
    DescribeInstancePatchStates, InstalledPendingReboot until a reboot,
    output truncated at 24,000 characters (the whole of it in S3 when the
    command names a bucket), CancelCommand, UpdatePatchBaseline,
    GetPatchBaseline, tagged baselines;
  - RunInstances naming an instance profile created moments ago answers
    Invalid IAM Instance Profile (instance_profiles.py; per account);
  - warm pools (warm_pools.py): pool instances launched from the group's
    launch template of the time, drawn in first on scale-out with the image
    they carry, refilled, terminated by TerminateInstanceInAutoScalingGroup,
    replaced by Instance Refresh after the group's members;
  - STS AssumeRole (sts_roles.py): the role must exist and trust the caller
    (external id condition included), DurationSeconds within 900 s and the
    role's maximum, assumed credentials expire (ExpiredToken);
  - IAM SimulatePrincipalPolicy (iam_simulate.py; moto has none): the
    user's (and its groups') or role's policies evaluated per action and
    resource with the given context keys, as AWS's evaluation logic does.

Application model (not AWS behaviour; the stand-in for the software on the
instances, documented in crates/aws/README.md): an image tagged
`harness:bakes=broken` yields broken images (CreateImage from an instance
launched from it), and instances on a broken image fail their target
group's health checks and answer repave's SSM health probe with 503.

Control API (POST JSON, on the same port):
  /_harness/account  {"account": "123456789012", "refuse_launch_configurations": true}
  /_harness/settings {"image_pending_seconds": 3, ...} (see SETTINGS)
  /_harness/patches  {"account": ..., "image": ..., "os": ..., "patches": [...]}
  /_harness/report   {"account": ...} -> what the harness recorded for the
                     account (classic_elb.py: early_terminations;
                     warm_pools.py: warm_pool_draws)
                     (the patches an image's instances have; see ssm_patching.py)

Run: python aws_harness.py -H 127.0.0.1 -p 5055
"""

import base64
import copy
import json
import math
import os
import threading
import time
import uuid
from datetime import datetime, timezone

import moto.server
from moto.autoscaling import models as asg_models
from moto.autoscaling import responses as asg_responses
from moto.autoscaling.exceptions import AutoscalingClientError, ValidationError
from moto.core.responses import ActionResult, EmptyResult
from moto.ec2.exceptions import EC2ClientError, InvalidAMIIdError, InvalidInstanceIdError
from moto.ec2.models import amis as ec2_amis
from moto.ec2.models import instances as ec2_instances
from moto.ec2.models import launch_templates as ec2_lt
from moto.ec2.responses import amis as ami_responses
from moto.ec2.responses import instances as instance_responses
from moto.ec2.responses import launch_templates as lt_responses
from moto.ec2.utils import parse_user_data
from moto.elbv2 import models as elb_models
from moto.ssm import models as ssm_models

import classic_elb
import operation_record
import iam_enforcement
import iam_simulate
import instance_profiles
import ssm_patching
import sts_roles
import warm_pools

SETTINGS = {
    # CreateImage -> available.
    "image_pending_seconds": float(os.environ.get("HARNESS_IMAGE_PENDING_SECONDS", "3")),
    # CreateImage -> visible to DescribeImages.
    "image_invisible_seconds": float(os.environ.get("HARNESS_IMAGE_INVISIBLE_SECONDS", "1")),
    # RunInstances -> visible to DescribeInstances.
    "instance_invisible_seconds": float(os.environ.get("HARNESS_INSTANCE_INVISIBLE_SECONDS", "1")),
    # Auto Scaling launch -> instance running, lifecycle hooks may start.
    "member_pending_seconds": float(os.environ.get("HARNESS_MEMBER_PENDING_SECONDS", "1")),
}

# Per-account switches set through /_harness/account.
ACCOUNTS: dict = {}

# Tag on an image whose baked children break the application.
BAKES_TAG = "harness:bakes"

# repave's SSM health probe prints this marker, then the HTTP status.
PROBE_MARKER = "repave-health-probe"

# moto's backends are not thread-safe, and the lazy clock below must see
# one request at a time.
LOCK = threading.RLock()


def now() -> float:
    return time.time()


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat()


# ---------------------------------------------------------------------------
# The lazy clock: timed transitions (hooks, drains, refreshes) are applied at
# the start of every request, from wall-clock deadlines recorded when they
# began. Nothing runs in the background.

TICKERS: list = []  # callables run before every request


def tick() -> None:
    for f in list(TICKERS):
        f()


# ---------------------------------------------------------------------------
# The application model.


def image_is_broken(ec2_backend, image_id: str) -> bool:
    ami = ec2_backend.amis.get(image_id)
    return bool(ami is not None and getattr(ami, "_harness_broken", False))


def instance_app_broken(instance) -> bool:
    return image_is_broken(instance.ec2_backend, instance.image_id)


# ---------------------------------------------------------------------------
# ELBv2: health checks take threshold x interval; deregistration drains.
# https://docs.aws.amazon.com/elasticloadbalancing/latest/application/target-group-health-checks.html
#   "initial: The load balancer is sending the target the minimum number of
#    health checks required to determine its health status."
#   HealthyThresholdCount: "The number of consecutive health checks successes
#    required before considering an unhealthy target healthy."
# https://docs.aws.amazon.com/elasticloadbalancing/latest/application/load-balancer-target-groups.html#deregistration-delay
#   "Elastic Load Balancing stops sending requests to targets that are
#    deregistering. By default, Elastic Load Balancing waits 300 seconds
#    before completing the deregistration process ... The initial state of a
#    deregistering target is draining. After the deregistration delay
#    elapses, the deregistration process completes and the state of the
#    target is unused."

_tg_init = elb_models.FakeTargetGroup.__init__


def _tg_patched_init(self, *args, **kwargs):
    _tg_init(self, *args, **kwargs)
    self._harness_registered_at = {}
    self._harness_draining = {}  # id -> (target, until)


def _tg_delay(tg) -> float:
    return float(tg.attributes.get("deregistration_delay.timeout_seconds", 300))


def _tg_register(self, targets):
    for target in targets:
        if instance := self.ec2_backend.get_instance_by_id(target["Id"]):
            if instance.state != "running":
                raise elb_models.TargetNotRunning(instance_id=target["Id"])
        was = self.targets.get(target["Id"])
        self.targets[target["Id"]] = {"Id": target["Id"], "Port": target.get("Port", self.port)}
        self.deregistered_targets.pop(target["Id"], None)
        self._harness_draining.pop(target["Id"], None)
        if was is None:
            self._harness_registered_at[target["Id"]] = now()


def _tg_start_drain(tg, target_id: str) -> None:
    t = tg.targets.pop(target_id, None)
    if t is None:
        return
    tg._harness_registered_at.pop(target_id, None)
    tg._harness_draining[target_id] = (t, now() + _tg_delay(tg))


def _tg_deregister(self, targets):
    for target in targets:
        if target["Id"] not in self.targets:
            if target["Id"] in self._harness_draining:
                continue  # already draining: AWS accepts the call
            raise elb_models.InvalidTargetError()
        _tg_start_drain(self, target["Id"])


def _tg_deregister_terminated(self, instance_ids):
    # An instance terminated while registered drains like a deregistered
    # one (Auto Scaling deregisters before terminating, see below).
    for target_id in list(self.targets.keys()):
        if target_id in instance_ids:
            _tg_start_drain(self, target_id)


def _tg_finish_drains(tg) -> None:
    t = now()
    for target_id, (target, until) in list(tg._harness_draining.items()):
        if t >= until:
            del tg._harness_draining[target_id]
            tg.deregistered_targets[target_id] = target


def _tg_health_for(self, target, ec2_backend):
    _tg_finish_drains(self)
    FHS = elb_models.FakeHealthStatus
    target_id = target["Id"]
    if target_id in self._harness_draining:
        t, _ = self._harness_draining[target_id]
        return FHS(target_id, t["Port"], self.health_check_port, "draining",
                   "Target.DeregistrationInProgress", "Target deregistration is in progress")
    t = self.targets.get(target_id)
    if t is None:
        return FHS(target_id, target.get("Port", self.port), self.health_check_port, "unused",
                   "Target.NotRegistered", "Target is not registered to the target group")
    instance = ec2_backend.get_instance_by_id(target_id) if target_id.startswith("i-") else None
    if instance is not None and instance.state != "running":
        return FHS(target_id, t["Port"], self.health_check_port, "unused",
                   "Target.InvalidState", f"Target is in the {instance.state} state")
    since = self._harness_registered_at.get(target_id, 0.0)
    interval = float(self.health_check_interval_seconds or 30)
    broken = instance is not None and instance_app_broken(instance)
    threshold = int(self.unhealthy_threshold_count if broken else self.healthy_threshold_count)
    if now() - since < threshold * interval:
        return FHS(target_id, t["Port"], self.health_check_port, "initial",
                   "Elb.InitialHealthChecking", "Initial health checks in progress")
    if broken:
        return FHS(target_id, t["Port"], self.health_check_port, "unhealthy",
                   "Target.ResponseCodeMismatch", "Health checks failed with these codes: [503]")
    return FHS(target_id, t["Port"], self.health_check_port, "healthy")


def _elb_describe_target_health(self, target_group_arn, targets):
    tg = self.target_groups.get(target_group_arn)
    if tg is None:
        raise elb_models.TargetGroupNotFoundError()
    _tg_finish_drains(tg)
    if not targets:
        # AWS lists draining targets too.
        targets = list(tg.targets.values()) + [t for t, _ in tg._harness_draining.values()]
    return [tg.health_for(t, self.ec2_backend) for t in targets]


elb_models.FakeTargetGroup.__init__ = _tg_patched_init
elb_models.FakeTargetGroup.register = _tg_register
elb_models.FakeTargetGroup.deregister = _tg_deregister
elb_models.FakeTargetGroup.deregister_terminated_instances = _tg_deregister_terminated
elb_models.FakeTargetGroup.health_for = _tg_health_for
elb_models.ELBv2Backend.describe_target_health = _elb_describe_target_health


# ---------------------------------------------------------------------------
# EC2: eventual consistency of new instances and images.
# https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html
#   "... if you run a command to modify or describe the resource that you
#    just created, its ID might not have propagated throughout the system,
#    and you will get an error responding that the resource does not exist."
# (InvalidInstanceID.NotFound / InvalidAMIID.NotFound are the examples the
#  page gives.)

_HIDING = threading.local()


def _hiding() -> bool:
    return getattr(_HIDING, "on", False)


def _hidden_instance(i) -> bool:
    return now() < getattr(i, "_harness_visible_at", 0.0)


_run_instances = ec2_instances.InstanceBackend.run_instances


def _patched_run_instances(self, *args, **kwargs):
    reservation = _run_instances(self, *args, **kwargs)
    for i in reservation.instances:
        i._harness_visible_at = now() + SETTINGS["instance_invisible_seconds"]
    return reservation


_all_reservations = ec2_instances.InstanceBackend.all_reservations


def _patched_all_reservations(self, filters=None):
    reservations = _all_reservations(self, filters)
    if not _hiding():
        return reservations
    out = []
    for r in reservations:
        visible = [i for i in r.instances if not _hidden_instance(i)]
        if visible:
            r.instances = visible
            out.append(r)
    return out


_describe_instances_response = instance_responses.InstanceResponse.describe_instances


def _patched_describe_instances_response(self):
    _HIDING.on = True
    try:
        return _describe_instances_response(self)
    finally:
        _HIDING.on = False


# RunInstances is idempotent by ClientToken:
# https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html
#   "If you repeat the request with the same client token and the same
#    parameters, the API returns the same response" (moto ignores the token).
CLIENT_TOKENS: dict = {}
_run_instances_response = instance_responses.InstanceResponse.run_instances


def _patched_run_instances_response(self):
    token = self._get_param("ClientToken")
    key = (self.current_account, self.region, token)
    if token and key in CLIENT_TOKENS:
        reservation, members = CLIENT_TOKENS[key]
        again = copy.copy(reservation)
        again.instances = list(members)
        return ActionResult(again)
    result = _run_instances_response(self)
    if token:
        reservation = result.result
        CLIENT_TOKENS[key] = (reservation, list(reservation.instances))
    return result


instance_responses.InstanceResponse.run_instances = _patched_run_instances_response
ec2_instances.InstanceBackend.run_instances = _patched_run_instances
ec2_instances.InstanceBackend.all_reservations = _patched_all_reservations
instance_responses.InstanceResponse.describe_instances = _patched_describe_instances_response


# Images: pending for a while, invisible for the first moment, unique names.
# https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateImage.html
#   (the new AMI is `pending` until its snapshots complete; DescribeImages
#    reports `available` afterwards)
# https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html
#   "InvalidAMIName.Duplicate: The specified AMI name is already in use by
#    another AMI."


def _ami_state_get(self):
    if now() < getattr(self, "_harness_available_at", 0.0) and self._harness_state == "available":
        return "pending"
    return self._harness_state


def _ami_state_set(self, value):
    self._harness_state = value


ec2_amis.Ami.state = property(_ami_state_get, _ami_state_set)

_create_image = ec2_amis.AmiBackend.create_image


def _patched_create_image(self, instance_id, name, description, tag_specifications):
    for ami in self.amis.values():
        if ami.name == name and ami.owner_id == self.account_id and ami.state != "deregistered":
            raise EC2ClientError("InvalidAMIName.Duplicate", f"AMI name {name} is already in use by AMI {ami.id}")
    # Snapshot tags are supported by AWS ("TagSpecifications: The tags to
    # apply to the AMI and snapshots on creation"); moto raises.
    image_specs = [s for s in tag_specifications if s.get("ResourceType") != "snapshot"]
    snapshot_tags = [t for s in tag_specifications if s.get("ResourceType") == "snapshot" for t in s.get("Tags", [])]
    ami = _create_image(self, instance_id, name, description, image_specs)
    t = now()
    ami._harness_available_at = t + SETTINGS["image_pending_seconds"]
    ami._harness_visible_at = t + SETTINGS["image_invisible_seconds"]
    instance = self.get_instance(instance_id)
    source = self.amis.get(instance.image_id)
    ami._harness_broken = bool(
        source is not None and source.get_tags() and any(
            tag["key"] == BAKES_TAG and tag["value"] == "broken" for tag in source.get_tags()
        )
    )
    snapshot = getattr(ami, "ebs_snapshot", None)
    if snapshot is not None:
        for tag in snapshot_tags:
            snapshot.add_tag(tag["Key"], tag["Value"])
    # The image has what the instance had installed (patch model).
    ssm_patching.on_image_created(self.account_id, instance_id, ami.id)
    return ami


_describe_images = ec2_amis.AmiBackend.describe_images


def _patched_describe_images(self, ami_ids=None, filters=None, exec_users=None, owners=None):
    images = _describe_images(self, ami_ids=ami_ids, filters=filters, exec_users=exec_users, owners=owners)
    if not _hiding():
        return images
    visible = [i for i in images if now() >= getattr(i, "_harness_visible_at", 0.0)]
    if ami_ids and not visible and images:
        raise InvalidAMIIdError(ami_ids)
    return visible


_describe_images_response = ami_responses.AmisResponse.describe_images


def _patched_describe_images_response(self):
    _HIDING.on = True
    try:
        return _describe_images_response(self)
    finally:
        _HIDING.on = False


ec2_amis.AmiBackend.create_image = _patched_create_image
ec2_amis.AmiBackend.describe_images = _patched_describe_images


# https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_Image.html
#   "PlatformDetails: The platform details associated with the billing code
#    of the AMI" ("Linux/UNIX", "Windows", "Red Hat Enterprise Linux", ...);
#   moto leaves it out.
def _ami_platform_details(self):
    explicit = getattr(self, "_harness_platform_details", None)
    if explicit:
        return explicit
    return "Windows" if self.platform == "windows" else "Linux/UNIX"


ec2_amis.Ami.platform_details = property(_ami_platform_details)

_reboot_instances = ec2_instances.InstanceBackend.reboot_instances


def _patched_reboot_instances(self, instance_ids):
    rebooted = _reboot_instances(self, instance_ids)
    for i in rebooted:
        ssm_patching.on_reboot(self.account_id, i.id)
    return rebooted


ec2_instances.InstanceBackend.reboot_instances = _patched_reboot_instances
ami_responses.AmisResponse.describe_images = _patched_describe_images_response


# ---------------------------------------------------------------------------
# Launch templates: SourceVersion.
# https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateLaunchTemplateVersion.html
#   "SourceVersion: The version of the launch template on which to base the
#    new version. Snapshots applied to the block device mapping are ignored
#    when creating a new version unless they are explicitly included. If you
#    specify this parameter, the new version inherits the launch parameters
#    from the source version. If you specify additional launch parameters
#    for the new version, they overwrite the corresponding launch parameters
#    inherited from the source version."


def _inherit(source: dict, data: dict) -> dict:
    merged = copy.deepcopy(source)
    for mapping in merged.get("BlockDeviceMappings", []) or []:
        ebs = mapping.get("Ebs")
        if isinstance(ebs, dict):
            ebs.pop("SnapshotId", None)
    merged.update(copy.deepcopy(data))
    return merged


def _patched_create_lt_version(self):
    name = self._get_param("LaunchTemplateName")
    tmpl_id = self._get_param("LaunchTemplateId")
    template = self.ec2_backend.get_launch_template_by_name(name) if name else self.ec2_backend.get_launch_template(tmpl_id)
    version_description = self._get_param("VersionDescription")
    template_data = self._get_param("LaunchTemplateData", {})
    if "UserData" in template_data:
        # moto stores it unencoded and then fails every launch (500).
        template_data["UserData"] = parse_user_data(template_data["UserData"])
    source = self._get_param("SourceVersion")
    self.error_on_dryrun()
    if source is not None:
        template_data = _inherit(template.get_version(source).data, template_data)
    version = template.create_version(template_data, version_description)
    return ActionResult({
        "LaunchTemplateVersion": {
            "CreateTime": version.create_time,
            "CreatedBy": f"arn:{self.partition}:iam::{self.current_account}:root",
            "DefaultVersion": template.is_default(version),
            "LaunchTemplateData": version.data,
            "LaunchTemplateId": template.id,
            "LaunchTemplateName": template.name,
            "VersionDescription": version.description,
            "VersionNumber": version.number,
        },
    })


lt_responses.LaunchTemplates.create_launch_template_version = _patched_create_lt_version


# ---------------------------------------------------------------------------
# Auto Scaling.
#
# Instance lifecycle, from
# https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-lifecycle.html
# and https://docs.aws.amazon.com/autoscaling/ec2/userguide/lifecycle-hooks-overview.html:
#   Pending -> (launch hooks) Pending:Wait -> Pending:Proceed -> InService
#   "the instances are not registered with the load balancer until the
#    lifecycle hook completes" / "Amazon EC2 Auto Scaling ... registers the
#    instance with the load balancer ... when it enters InService";
#   "The instance remains in a wait state either until you complete the
#    lifecycle action, or the timeout period ends" (HeartbeatTimeout,
#    default 3600 s), then the DefaultResult (default ABANDON) applies:
#    ABANDON on launch terminates the instance and launches a new one.
#   Terminating: "Amazon EC2 Auto Scaling ... deregisters the instance from
#    the load balancer and waits for the deregistration delay (connection
#    draining) to complete before terminating", then Terminating:Wait with
#    termination hooks, then Terminated.
# https://docs.aws.amazon.com/autoscaling/ec2/userguide/attach-load-balancer-asg.html
#   instances are registered when they enter InService.

LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
LIVE_STATES = ("Pending", "Pending:Wait", "Pending:Proceed", "InService")

GROUPS: list = []  # every group, for the ticker


def _hooks(group, transition):
    return [h for h in group.autoscaling_backend.lifecycle_hooks.values()
            if h.auto_scaling_group_name == group.name and h.lifecycle_transition == transition]


def _target_groups(group):
    if not group.target_group_arns:
        return []
    elb = group.autoscaling_backend.elbv2_backend
    return [elb.target_groups[a] for a in group.target_group_arns if a in elb.target_groups]


def _classic_elbs(group):
    if not group.load_balancer_names:
        return []
    elb = group.autoscaling_backend.elb_backend
    return [lb for n in group.load_balancer_names if (lb := elb.get_load_balancer(n)) is not None]


def _register(group, state) -> None:
    for tg in _target_groups(group):
        key = (tg.arn, state.instance.id)
        if key not in group._harness_registered:
            group._harness_registered.add(key)
            tg.register([{"Id": state.instance.id, "Port": tg.port}])
    for lb in _classic_elbs(group):
        key = ("classic:" + lb.name, state.instance.id)
        if key not in group._harness_registered:
            group._harness_registered.add(key)
            group.autoscaling_backend.elb_backend.register_instances(lb.name, [state.instance.id])


def _begin_terminate(group, state, replace: bool) -> None:
    """Take a member out: Terminating (drain), Terminating:Wait (hooks), gone."""
    if state.lifecycle_state.startswith("Terminating"):
        return
    state.lifecycle_state = "Terminating"
    until = now()
    for tg in _target_groups(group):
        if state.instance.id in tg.targets:
            _tg_start_drain(tg, state.instance.id)
            until = max(until, now() + _tg_delay(tg))
        elif state.instance.id in tg._harness_draining:
            until = max(until, tg._harness_draining[state.instance.id][1])
    for lb in _classic_elbs(group):
        until = max(until, classic_elb.begin_drain(lb, state.instance.id))
    state._harness_until = until
    state._harness_hooks_left = None


def _finish_terminate(group, state) -> None:
    group.instance_states = [s for s in group.instance_states if s is not state]
    group._harness_registered = {k for k in group._harness_registered if k[1] != state.instance.id}
    for lb in _classic_elbs(group):
        classic_elb.forget(lb, state.instance.id)
    if state.instance.state != "terminated":
        group.autoscaling_backend.ec2_backend.terminate_instances([state.instance.id])


def _launch(group, count: int, draw: bool = True) -> None:
    """Scale out by `count`: the warm pool's ready instances first (they
    keep their image), new launches for the rest. An Instance Refresh's
    replacements (`draw=False`) launch from its desired configuration."""
    before = set(id(s) for s in group.instance_states)
    drawn = warm_pools.draw(group, count) if draw else []
    group.instance_states.extend(drawn)
    if count > len(drawn):
        group.replace_autoscaling_group_instances(count - len(drawn), group.get_propagated_tags())
    t = now()
    for s in group.instance_states:
        if id(s) in before:
            continue
        s.lifecycle_state = "Pending"
        s._harness_until = t + SETTINGS["member_pending_seconds"]
        s._harness_hooks_left = None
        s.instance._harness_launched_by_asg = True


def _launch_detached(group, count: int) -> list:
    """Instances launched from the group's launch spec that are not members
    (the warm pool's)."""
    before = set(id(s) for s in group.instance_states)
    group.replace_autoscaling_group_instances(count, group.get_propagated_tags())
    new = [s for s in group.instance_states if id(s) not in before]
    group.instance_states = [s for s in group.instance_states if id(s) in before]
    for s in new:
        s.instance._harness_launched_by_asg = True
    return new


warm_pools.install(now, SETTINGS, _launch_detached)


def _live(group):
    return [s for s in group.instance_states if s.lifecycle_state in LIVE_STATES]


def _counted(group):
    """Live members that count toward desired capacity: an Instance
    Refresh's launch-before-terminate surge does not."""
    return [s for s in _live(group) if not getattr(s, "_harness_surge", False)]


def _reconcile(group) -> None:
    """Launch or take out members until live members == desired."""
    target = group.desired_capacity or 0
    live = _counted(group)
    if len(live) < target:
        _launch(group, target - len(live))
    elif len(live) > target:
        # Scale-in: never protected members; pending ones first, then the
        # oldest (AWS's default policy also balances zones and prefers the
        # oldest launch template; the harness keeps the last part).
        candidates = [s for s in live if not s.protected_from_scale_in]
        candidates.sort(key=lambda s: (s.lifecycle_state == "InService", s.instance.launch_time))
        for s in candidates[: len(live) - target]:
            _begin_terminate(group, s, replace=False)


def _advance(group) -> None:
    t = now()
    for s in list(group.instance_states):
        ls = s.lifecycle_state
        until = getattr(s, "_harness_until", 0.0)
        if ls == "Pending" and t >= until and s.instance.state == "running":
            hooks = _hooks(group, LAUNCHING)
            if hooks:
                s.lifecycle_state = "Pending:Wait"
                s._harness_hooks_left = {h.name: t + float(h.heartbeat_timeout) for h in hooks}
                s._harness_hook_result = "CONTINUE"
            else:
                s.lifecycle_state = "InService"
        if s.lifecycle_state == "Pending:Wait":
            for name, deadline in list((s._harness_hooks_left or {}).items()):
                if t >= deadline:
                    hook = group.autoscaling_backend.lifecycle_hooks.get(f"{group.name}_{name}")
                    result = hook.default_result if hook else "ABANDON"
                    _complete_hook(group, s, name, result)
        if s.lifecycle_state == "Pending:Proceed":
            s.lifecycle_state = "InService"
        if s.lifecycle_state == "InService":
            _register(group, s)
        if s.lifecycle_state == "Terminating" and t >= until:
            hooks = _hooks(group, TERMINATING)
            if hooks:
                s.lifecycle_state = "Terminating:Wait"
                s._harness_hooks_left = {h.name: t + float(h.heartbeat_timeout) for h in hooks}
                s._harness_hook_result = "CONTINUE"
            else:
                _finish_terminate(group, s)
                continue
        if s.lifecycle_state == "Terminating:Wait":
            for name, deadline in list((s._harness_hooks_left or {}).items()):
                if t >= deadline:
                    hook = group.autoscaling_backend.lifecycle_hooks.get(f"{group.name}_{name}")
                    _complete_hook(group, s, name, hook.default_result if hook else "ABANDON")
        if s.lifecycle_state == "Terminating:Proceed":
            _finish_terminate(group, s)
    _reconcile(group)


def _complete_hook(group, state, hook_name: str, result: str) -> None:
    left = state._harness_hooks_left or {}
    if hook_name not in left:
        return
    del left[hook_name]
    if result == "ABANDON":
        state._harness_hook_result = "ABANDON"
    if left:
        return
    if state.lifecycle_state == "Pending:Wait":
        if state._harness_hook_result == "ABANDON":
            # The launch is abandoned: the instance goes, a new one comes.
            _begin_terminate(group, state, replace=True)
            state._harness_until = now()
        else:
            state.lifecycle_state = "Pending:Proceed"
    elif state.lifecycle_state == "Terminating:Wait":
        state.lifecycle_state = "Terminating:Proceed"


def _asg_tick() -> None:
    for group in list(GROUPS):
        if group.name not in group.autoscaling_backend.autoscaling_groups:
            GROUPS.remove(group)
            continue
        _advance(group)
        warm_pools.tick(group)
        _refresh_advance(group)


TICKERS.append(_asg_tick)

_group_init = asg_models.FakeAutoScalingGroup.__init__


def _patched_group_init(self, *args, **kwargs):
    self._harness_registered = set()
    self._harness_refreshes = []
    self.default_instance_warmup = None
    _group_init(self, *args, **kwargs)
    GROUPS.append(self)


_group_update = asg_models.FakeAutoScalingGroup.update


def _patched_group_update(self, *args, **kwargs):
    # UpdateAutoScalingGroup changes only what it names: moto drops the
    # MixedInstancesPolicy of any update that does not repeat it.
    names_spec = kwargs.get("launch_config_name") or kwargs.get("launch_template")
    if kwargs.get("mixed_instances_policy") is None and not names_spec:
        kwargs["mixed_instances_policy"] = self.mixed_instances_policy
    return _group_update(self, *args, **kwargs)


def _patched_set_desired_capacity(self, new_capacity):
    self.desired_capacity = self.min_size if new_capacity is None else new_capacity
    _reconcile(self)


def _patched_update_attached_target_groups(self, group_name):
    group = self.autoscaling_groups[group_name]
    for s in group.instance_states:
        if s.lifecycle_state == "InService":
            _register(group, s)


# moto's update_attached_elbs registers every member with the group's
# Classic Load Balancers at once and deregisters the rest on the spot; AWS
# registers a member when it enters InService and drains it when it goes
# (see classic_elb.py), which _register / _begin_terminate do.
_patched_update_attached_elbs = _patched_update_attached_target_groups


def _check_range(desired, lo, hi, what: str) -> None:
    if desired is None:
        return
    if hi is not None and desired > hi:
        raise ValidationError(what.format(value=desired, bound="above max", limit=hi))
    if lo is not None and desired < lo:
        raise ValidationError(what.format(value=desired, bound="below min", limit=lo))


# https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_SetDesiredCapacity.html
#   DesiredCapacity must be within the group's minimum and maximum size; AWS
#   answers "ValidationError: New SetDesiredCapacity value 9 is above max
#   value 8 for the AutoScalingGroup."
def _patched_backend_set_desired(self, group_name, desired_capacity):
    group = self.autoscaling_groups[group_name]
    _check_range(desired_capacity, group.min_size, group.max_size,
                 "New SetDesiredCapacity value {value} is {bound} value {limit} for the AutoScalingGroup.")
    group.set_desired_capacity(desired_capacity)


_backend_update = asg_models.AutoScalingBackend.update_auto_scaling_group


# https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_UpdateAutoScalingGroup.html
#   "The size of the group must be ... greater than or equal to the minimum
#    size and less than or equal to the maximum size"; AWS answers
#   "ValidationError: Desired capacity:9 must be between the specified min
#    size:1 and max size:8".
def _patched_backend_update(self, name, availability_zones, desired_capacity, max_size, min_size, *args, **kwargs):
    group = self.autoscaling_groups.get(name)
    if group is not None:
        lo = min_size if min_size is not None else group.min_size
        hi = max_size if max_size is not None else group.max_size
        d = desired_capacity if desired_capacity is not None else group.desired_capacity
        if lo is not None and hi is not None and lo > hi:
            raise ValidationError(f"Max bound, {hi}, must be greater than or equal to min bound, {lo}")
        if d is not None and hi is not None and lo is not None and not lo <= d <= hi:
            if desired_capacity is not None:
                raise ValidationError(
                    f"Desired capacity:{d} must be between the specified min size:{lo} and max size:{hi}"
                )
            # Only min / max given: AWS moves desired into the new range.
            desired_capacity = min(max(d, lo), hi)
    return _backend_update(self, name, availability_zones, desired_capacity, max_size, min_size, *args, **kwargs)


# https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_TerminateInstanceInAutoScalingGroup.html
#   ShouldDecrementDesiredCapacity: "Indicates whether terminating the
#   instance also decrements the size of the Auto Scaling group"; below the
#   minimum AWS answers "ValidationError: Currently, desiredCapacity is 1 and
#   minSize is 1. Terminating instance without replacement will violate
#   group's min size constraint. Either set shouldDecrementDesiredCapacity
#   flag to false or lower group's min size."
def _patched_terminate_instance(self, instance_id, should_decrement):
    state = next(
        (s for g in self.autoscaling_groups.values() for s in g.instance_states if s.instance.id == instance_id),
        None,
    )
    if state is None:
        pooled = warm_pools.find(self, instance_id)
        if pooled is not None:
            # A warm pool instance: not part of desired capacity; the pool
            # refills from the group's launch spec.
            group, state = pooled
            warm_pools.begin_terminate(state)
            return asg_models.TerminateInstanceActivity(state.instance, group.desired_capacity)
        raise ValidationError("Instance Id not found - No managed instance found for instance ID: " + instance_id)
    group = state.instance.autoscaling_group
    for lb in _classic_elbs(group):
        until = classic_elb.drain_until(lb, instance_id)
        if until is not None and until > now() and not state.lifecycle_state.startswith("Terminating"):
            classic_elb.record_early_termination(self.account_id, instance_id)
    original = group.desired_capacity
    if should_decrement and not state.lifecycle_state.startswith("Terminating"):
        if original - 1 < (group.min_size or 0):
            raise ValidationError(
                f"Currently, desiredCapacity is {original} and minSize is {group.min_size}. Terminating "
                "instance without replacement will violate group's min size constraint. Either set "
                "shouldDecrementDesiredCapacity flag to false or lower group's min size."
            )
        group.desired_capacity = original - 1
    _begin_terminate(group, state, replace=not should_decrement)
    _reconcile(group)
    return asg_models.TerminateInstanceActivity(state.instance, original)


asg_models.FakeAutoScalingGroup.__init__ = _patched_group_init
asg_models.FakeAutoScalingGroup.set_desired_capacity = _patched_set_desired_capacity
asg_models.FakeAutoScalingGroup.update = _patched_group_update
asg_models.AutoScalingBackend.update_attached_target_groups = _patched_update_attached_target_groups
asg_models.AutoScalingBackend.update_attached_elbs = _patched_update_attached_elbs
classic_elb.install(instance_app_broken)
asg_models.AutoScalingBackend.set_desired_capacity = _patched_backend_set_desired
asg_models.AutoScalingBackend.update_auto_scaling_group = _patched_backend_update
asg_models.AutoScalingBackend.terminate_instance = _patched_terminate_instance

# HealthCheckGracePeriod: "The default value is 0 seconds" (CreateAutoScalingGroup
# API reference; moto uses 300). DefaultInstanceWarmup is kept and returned.
_create_group_response = asg_responses.AutoScalingResponse.create_auto_scaling_group


def _patched_create_group_response(self):
    result = _create_group_response(self)
    group = self.autoscaling_backend.autoscaling_groups[self._get_param("AutoScalingGroupName")]
    grace = self._get_int_param("HealthCheckGracePeriod")
    group.health_check_grace_period = grace if grace is not None else 0
    warmup = self._get_int_param("DefaultInstanceWarmup")
    group.default_instance_warmup = warmup
    return result


_update_group_response = asg_responses.AutoScalingResponse.update_auto_scaling_group


def _patched_update_group_response(self):
    result = _update_group_response(self)
    group = self.autoscaling_backend.autoscaling_groups[self._get_param("AutoScalingGroupName")]
    warmup = self._get_int_param("DefaultInstanceWarmup")
    if warmup is not None:
        group.default_instance_warmup = None if warmup < 0 else warmup
    return result


asg_responses.AutoScalingResponse.create_auto_scaling_group = _patched_create_group_response
asg_responses.AutoScalingResponse.update_auto_scaling_group = _patched_update_group_response


def _find_member(backend, group_name, instance_id):
    group = backend.autoscaling_groups.get(group_name)
    if group is None:
        raise ValidationError(f"AutoScalingGroup name not found - {group_name}")
    for s in group.instance_states:
        if s.instance.id == instance_id:
            return group, s
    raise ValidationError(f"No active Lifecycle Action found with instance ID {instance_id}")


# https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_CompleteLifecycleAction.html
def _complete_lifecycle_action(self):
    backend = self.autoscaling_backend
    group, state = _find_member(backend, self._get_param("AutoScalingGroupName"), self._get_param("InstanceId"))
    name = self._get_param("LifecycleHookName")
    if state.lifecycle_state not in ("Pending:Wait", "Terminating:Wait") or name not in (state._harness_hooks_left or {}):
        raise ValidationError(f"No active Lifecycle Action found with instance ID {state.instance.id}")
    _complete_hook(group, state, name, self._get_param("LifecycleActionResult"))
    _advance(group)
    return EmptyResult()


# https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_RecordLifecycleActionHeartbeat.html
#   "Records a heartbeat for the lifecycle action ... This extends the
#    timeout by the length of time defined using the PutLifecycleHook API call."
def _record_lifecycle_action_heartbeat(self):
    backend = self.autoscaling_backend
    group, state = _find_member(backend, self._get_param("AutoScalingGroupName"), self._get_param("InstanceId"))
    name = self._get_param("LifecycleHookName")
    hook = backend.lifecycle_hooks.get(f"{group.name}_{name}")
    if hook is None or name not in (state._harness_hooks_left or {}):
        raise ValidationError(f"No active Lifecycle Action found with instance ID {state.instance.id}")
    state._harness_hooks_left[name] = now() + float(hook.heartbeat_timeout)
    return EmptyResult()


asg_responses.AutoScalingResponse.complete_lifecycle_action = _complete_lifecycle_action
asg_responses.AutoScalingResponse.record_lifecycle_action_heartbeat = _record_lifecycle_action_heartbeat


# Launch configurations: "Amazon EC2 Auto Scaling no longer supports the
# creation of launch configurations for new accounts (created on or after
# October 1, 2023)" — https://docs.aws.amazon.com/autoscaling/ec2/userguide/launch-configurations.html
_create_lc_response = asg_responses.AutoScalingResponse.create_launch_configuration


def _patched_create_lc_response(self):
    if ACCOUNTS.get(self.current_account, {}).get("refuse_launch_configurations"):
        raise AutoscalingClientError(
            "UnsupportedOperation",
            "The Launch Configuration creation operation is not available in your account. Use launch "
            "templates to create configuration templates for your Auto Scaling groups.",
        )
    return _create_lc_response(self)


asg_responses.AutoScalingResponse.create_launch_configuration = _patched_create_lc_response


# ---------------------------------------------------------------------------
# Instance Refresh.
# https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_StartInstanceRefresh.html
# https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_RefreshPreferences.html
#   MinHealthyPercentage 0..100 (default 90), MaxHealthyPercentage 100..200,
#   "the difference between them cannot be greater than 100";
#   AutoRollback: "A rollback is not supported in the following situations:
#   There is no desired configuration specified for the instance refresh ...
#   The Auto Scaling group uses the launch template's $Latest or $Default
#   version."; InstanceWarmup defaults to DefaultInstanceWarmup, else the
#   health check grace period.
# https://docs.aws.amazon.com/autoscaling/ec2/userguide/instance-refresh-overview.html
#   instances are replaced in batches the healthy percentages allow; with
#   MaxHealthyPercentage above 100 new instances launch before old ones
#   terminate; a new instance counts once InService, healthy and warmed up;
#   on success the group takes the desired configuration.


class Refresh:
    def __init__(self, group, prefs, desired):
        self.id = str(uuid.uuid4())
        self.group = group
        self.prefs = prefs
        self.desired = desired  # {"LaunchTemplate": {...}} or None
        self.status = "Pending"
        self.status_reason = None
        self.start_time = now()
        self.end_time = None
        self.to_update = None
        self.launched = []  # InstanceState objects launched for the refresh
        self.retiring = []  # old members being terminated
        self.ready_at = {}

    def target_image(self):
        if not self.desired:
            return self.group.image_id
        lt = self.desired["LaunchTemplate"]
        ec2 = self.group.ec2_backend
        template = ec2.get_launch_template(lt["LaunchTemplateId"]) if lt.get("LaunchTemplateId") \
            else ec2.get_launch_template_by_name(lt["LaunchTemplateName"])
        return template.get_version(lt.get("Version", "$Default")).image_id

    def response(self):
        pct = 0
        if self.to_update:
            done = self.to_update - len(self.old_members())
            pct = int(100 * done / self.to_update)
        if self.status == "Successful":
            pct = 100
        out = {
            "InstanceRefreshId": self.id,
            "AutoScalingGroupName": self.group.name,
            "Status": self.status,
            "StatusReason": self.status_reason,
            "StartTime": iso(self.start_time),
            "PercentageComplete": pct,
            "InstancesToUpdate": len(self.old_members()),
            "Preferences": self.prefs,
        }
        if self.end_time:
            out["EndTime"] = iso(self.end_time)
        if self.desired:
            out["DesiredConfiguration"] = self.desired
        return out

    def old_members(self):
        """Members the refresh must still replace. ScaleInProtectedInstances
        (API_RefreshPreferences): "Refresh" replaces protected instances,
        "Ignore" (the default) skips them, "Wait" waits for their protection
        to be removed (one hour, then the refresh fails). Standby members
        are not live: the default StandbyInstances "Ignore"."""
        image = self.target_image()
        mode = self.prefs.get("ScaleInProtectedInstances", "Ignore")
        return [s for s in self.group.instance_states
                if s.lifecycle_state in LIVE_STATES and s.instance.image_id != image
                and not (mode == "Ignore" and s.protected_from_scale_in)]

    def replaceable(self):
        """Old members the refresh may take now (not protected under Wait)."""
        mode = self.prefs.get("ScaleInProtectedInstances", "Ignore")
        return [s for s in self.old_members() if not (mode == "Wait" and s.protected_from_scale_in)]


def _member_ready(group, state, warmup: float) -> bool:
    if state.lifecycle_state != "InService":
        return False
    tgs = _target_groups(group)
    since = 0.0
    for tg in tgs:
        h = tg.health_for({"Id": state.instance.id}, group.ec2_backend)
        if h.status != "healthy":
            return False
        since = max(since, tg._harness_registered_at.get(state.instance.id, 0.0)
                    + int(tg.healthy_threshold_count) * float(tg.health_check_interval_seconds or 30))
    if not tgs:
        since = getattr(state, "_harness_until", 0.0)
    return now() >= since + warmup


def _refresh_advance(group) -> None:
    for r in group._harness_refreshes:
        if r.status in ("Pending", "InProgress"):
            _refresh_step(r)


def _refresh_step(r: Refresh) -> None:
    group = r.group
    r.status = "InProgress"
    prefs = r.prefs
    warmup = prefs.get("InstanceWarmup")
    if warmup is None:
        warmup = group.default_instance_warmup
    if warmup is None:
        warmup = group.health_check_grace_period or 0
    desired = group.desired_capacity or 0
    lo = int(prefs.get("MinHealthyPercentage", 90))
    hi = int(prefs.get("MaxHealthyPercentage", 100))
    old = r.old_members()
    if r.to_update is None:
        r.to_update = len(old)
    if old and not r.replaceable() and not r.launched:
        # Only protected members under "Wait" are left: wait, an hour at most.
        if now() > r.start_time + 3600:
            r.status = "Failed"
            r.status_reason = "Protected instances were not unprotected within one hour"
            r.end_time = now()
        return
    old = r.replaceable()
    # New instances of the refresh that are not ready hold the next batch.
    launched_live = [s for s in r.launched if s in group.instance_states and s.lifecycle_state in LIVE_STATES]
    if any(s.lifecycle_state.startswith("Pending") for s in launched_live):
        return
    if any(not _member_ready(group, s, float(warmup)) for s in launched_live):
        # Unhealthy after its grace: the refresh fails (auto rollback not modelled).
        for s in launched_live:
            h = [tg.health_for({"Id": s.instance.id}, group.ec2_backend).status for tg in _target_groups(group)]
            if "unhealthy" in h:
                r.status = "Failed"
                r.status_reason = f"Instance {s.instance.id} failed its health checks"
                r.end_time = now()
        return
    # Old members taken out for launched replacements.
    if any(s in group.instance_states for s in r.retiring):
        return
    if launched_live:
        # The surge is ready: it replaces as many old members.
        for s in launched_live:
            s._harness_surge = False
        for s in old[: len(launched_live)]:
            r.retiring.append(s)
            _begin_terminate(group, s, replace=False)
        r.launched = []
        return
    if not old:
        # The live pool is done; the group takes the desired configuration,
        # then "it replaces instances in the warm pool"
        # (ec2-auto-scaling-warm-pools.html): the old ones are terminated
        # and the pool refills from the new configuration.
        if r.desired and not getattr(r, "_harness_applied", False):
            lt = r.desired["LaunchTemplate"]
            group._set_launch_configuration(None, lt, None)
            group.provided_launch_template_version = lt.get("Version")
            r._harness_applied = True
        stale = warm_pools.stale(group, r.target_image())
        if stale or warm_pools.filling(group):
            for s in stale:
                warm_pools.begin_terminate(s)
            return
        r.status = "Successful"
        r.end_time = now()
        return
    floor = math.ceil(desired * lo / 100)
    ceiling = max(desired + (1 if hi > 100 else 0), math.floor(desired * hi / 100))
    in_service = [s for s in _counted(group) if _member_ready(group, s, 0.0)]
    if hi > 100:
        batch = max(1, min(len(old), ceiling - len(_counted(group))))
        image = r.target_image()
        before = set(id(s) for s in group.instance_states)
        _launch_image(group, batch, image)
        r.launched = [s for s in group.instance_states if id(s) not in before]
        for s in r.launched:
            s._harness_surge = True
    else:
        batch = max(1, len(in_service) - floor) if lo < 100 else 0
        if batch == 0:
            r.status = "Failed"
            r.status_reason = "MinHealthyPercentage 100 with MaxHealthyPercentage 100 leaves no room"
            r.end_time = now()
            return
        for s in old[:batch]:
            r.retiring.append(s)
            _begin_terminate(group, s, replace=False)
        # Replacements come from the desired configuration.
        before = set(id(s) for s in group.instance_states)
        _launch_image(group, batch, r.target_image())
        r.launched = [s for s in group.instance_states if id(s) not in before]


def _launch_image(group, count: int, image: str) -> None:
    """Launch members from `image` (the refresh's desired configuration)."""
    original = type(group).image_id
    try:
        type(group).image_id = property(lambda self: image if self is group else original.fget(self))
        _launch(group, count, draw=False)
    finally:
        type(group).image_id = original


def _start_instance_refresh(self):
    backend = self.autoscaling_backend
    name = self._get_param("AutoScalingGroupName")
    group = backend.autoscaling_groups.get(name)
    if group is None:
        raise ValidationError(f"AutoScalingGroup name not found - {name}")
    if any(r.status in ("Pending", "InProgress", "Cancelling") for r in group._harness_refreshes):
        raise AutoscalingClientError(
            "InstanceRefreshInProgress",
            f"An Instance Refresh is already in progress and blocks the execution of this Instance Refresh.",
        )
    params = self._get_params()
    prefs = params.get("Preferences") or {}
    desired = params.get("DesiredConfiguration")
    lo = int(prefs.get("MinHealthyPercentage", 90))
    hi = int(prefs.get("MaxHealthyPercentage", 100))
    if not 0 <= lo <= 100:
        raise ValidationError("MinHealthyPercentage must be between 0 and 100")
    if not 100 <= hi <= 200:
        raise ValidationError("MaxHealthyPercentage must be between 100 and 200")
    if hi - lo > 100:
        raise ValidationError("The difference between MaxHealthyPercentage and MinHealthyPercentage can't be more than 100")
    if str(prefs.get("AutoRollback", "false")).lower() == "true":
        if not desired:
            raise ValidationError("AutoRollback is not supported without a DesiredConfiguration.")
        version = str(desired.get("LaunchTemplate", {}).get("Version", "$Default"))
        if version in ("$Latest", "$Default"):
            raise ValidationError(
                "AutoRollback is not supported when the desired configuration uses the $Latest or $Default "
                "launch template version."
            )
    warmup = prefs.get("InstanceWarmup")
    if warmup is not None and int(warmup) < 0:
        raise ValidationError("InstanceWarmup must be 0 or more")
    for key in ("MinHealthyPercentage", "MaxHealthyPercentage", "InstanceWarmup", "CheckpointDelay"):
        if key in prefs and prefs[key] is not None:
            prefs[key] = int(prefs[key])
    r = Refresh(group, prefs, desired)
    group._harness_refreshes.insert(0, r)
    return ActionResult({"InstanceRefreshId": r.id})


def _describe_instance_refreshes(self):
    backend = self.autoscaling_backend
    name = self._get_param("AutoScalingGroupName")
    group = backend.autoscaling_groups.get(name)
    if group is None:
        raise ValidationError(f"AutoScalingGroup name not found - {name}")
    ids = self._get_param("InstanceRefreshIds", [])
    out = [r.response() for r in group._harness_refreshes if not ids or r.id in ids]
    limit = self._get_int_param("MaxRecords", 50)
    return ActionResult({"InstanceRefreshes": out[:limit]})


def _cancel_instance_refresh(self):
    backend = self.autoscaling_backend
    name = self._get_param("AutoScalingGroupName")
    group = backend.autoscaling_groups.get(name)
    active = [r for r in (group._harness_refreshes if group else []) if r.status in ("Pending", "InProgress")]
    if not active:
        raise AutoscalingClientError("ActiveInstanceRefreshNotFound", "No in progress or pending Instance Refresh found for Auto Scaling group " + name)
    active[0].status = "Cancelled"
    active[0].end_time = now()
    return ActionResult({"InstanceRefreshId": active[0].id})


asg_responses.AutoScalingResponse.start_instance_refresh = _start_instance_refresh
asg_responses.AutoScalingResponse.describe_instance_refreshes = _describe_instance_refreshes
asg_responses.AutoScalingResponse.cancel_instance_refresh = _cancel_instance_refresh


# ---------------------------------------------------------------------------
# SSM: the application answers repave's health probe.


def _probe_output(account_id, region, instance_id) -> tuple:
    ec2 = ec2_instances_backend(account_id, region)
    instance = ec2.get_instance_by_id(instance_id) if ec2 else None
    if instance is None:
        return 1, "", "no such instance"
    code = 503 if instance_app_broken(instance) else 200
    return 0, f"{PROBE_MARKER} {code}\n", ""


def ec2_instances_backend(account_id, region):
    from moto.ec2.models import ec2_backends
    try:
        return ec2_backends[account_id][region]
    except KeyError:
        return None


_command_init = ssm_models.Command.__init__


def _patched_command_init(self, *args, **kwargs):
    # https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_SendCommand.html
    #   InstanceIds: "The IDs of the managed nodes where the command should
    #   run." moto adds every instance of the account when no Targets are
    #   given; the command runs on the ones named.
    requested = list(kwargs.get("instance_ids") or [])
    _command_init(self, *args, **kwargs)
    if requested and not (kwargs.get("targets") or []):
        self.instance_ids = [i for i in self.instance_ids if i in requested]
        self.invocations = [inv for inv in self.invocations if inv["InstanceId"] in requested]
        self.completed_count = self.target_count = len(self.instance_ids)
    if self.document_name == ssm_patching.PATCH_DOCUMENT:
        ssm_patching.start(self, requested or self.instance_ids)
        return
    commands = (self.parameters or {}).get("commands", [])
    script = "\n".join(commands) if isinstance(commands, list) else str(commands)
    if PROBE_MARKER in script:
        for inv in self.invocations:
            rc, out, err = _probe_output(self.account_id, self.backend_region, inv["InstanceId"])
            inv["ResponseCode"] = rc
            inv["StandardOutputContent"] = out
            inv["StandardErrorContent"] = err
            if rc != 0:
                inv["Status"] = inv["StatusDetails"] = "Failed"


ssm_models.Command.__init__ = _patched_command_init
ssm_patching.install()
instance_profiles.install(ACCOUNTS, now)
sts_roles.install()
iam_simulate.install()


# ---------------------------------------------------------------------------
# The server: moto's WSGI app behind one lock, with the control API.


# HARNESS_LOG_ACTIONS=1: one line per request on stderr (account, action).
LOG_ACTIONS = os.environ.get("HARNESS_LOG_ACTIONS") == "1"


def log_action(environ) -> None:
    import io
    import sys
    from urllib.parse import parse_qs

    size = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(size)
    environ["wsgi.input"] = io.BytesIO(body)
    action = parse_qs(body.decode("utf-8", "replace")).get("Action", [environ.get("HTTP_X_AMZ_TARGET", "?")])[0]
    sys.stderr.write(f"harness {environ.get('HTTP_X_MOTO_ACCOUNT_ID', '-')} {action}\n")


class Harness:
    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_harness/"):
            return self.control(path, environ, start_response)
        if LOG_ACTIONS:
            log_action(environ)
        expired = sts_roles.expired_response(environ, start_response)
        if expired is not None:
            return expired
        iam_enforcement.remember_body(environ)
        operation_record.record(environ)
        with LOCK:
            tick()
            return list(self.app(environ, start_response))

    def control(self, path, environ, start_response):
        try:
            size = int(environ.get("CONTENT_LENGTH") or 0)
            body = json.loads(environ["wsgi.input"].read(size) or b"{}")
            with LOCK:
                if path == "/_harness/account":
                    account = str(body.pop("account"))
                    sts_roles.configure_account(account, body)
                    ACCOUNTS.setdefault(account, {}).update(body)
                elif path == "/_harness/patches":
                    ssm_patching.configure(body)
                elif path == "/_harness/report":
                    account = str(body["account"])
                    return self.answer(start_response, "200 OK", {
                        "early_terminations": classic_elb.EARLY_TERMINATIONS.get(account, []),
                        "profile_refusals": instance_profiles.REFUSALS.get(account, 0),
                        "warm_pool_draws": warm_pools.DRAWS.get(account, []),
                    })
                elif path == "/_harness/settings":
                    for k, v in body.items():
                        if k not in SETTINGS:
                            raise KeyError(k)
                        SETTINGS[k] = float(v)
                else:
                    raise KeyError(path)
            return self.answer(start_response, "200 OK", {"ok": True, "settings": SETTINGS})
        except (KeyError, ValueError) as e:
            return self.answer(start_response, "400 Bad Request", {"error": str(e)})

    @staticmethod
    def answer(start_response, status, value):
        body = json.dumps(value).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


def main() -> None:
    import argparse

    from werkzeug.serving import run_simple

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5055)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, Harness(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
