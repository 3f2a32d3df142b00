"""Patch Manager for the AWS-behaviour harness: what SSM does when
AWS-RunPatchBaseline runs on an instance, modelled on the patches each
instance has (missing or installed, with classification, severity and
release date, per OS), and the APIs that report it.

moto runs no command: `send_command` answers Success with empty output,
DescribeInstancePatches, DescribeInstancePatchStates, UpdatePatchBaseline,
GetPatchBaseline and CancelCommand do not exist, patch baselines cannot be
tagged, NAME_PREFIX matches whole names and deregistering a baseline from a
patch group keeps it registered. Each behaviour below cites the AWS page it
follows.

The patches an instance has come from its image: an image made with
CreateImage carries what its instance had installed, so a bake from a
patched image finds nothing missing. Tests describe the patches of an
image (or the account's default) through the control API:

  POST /_harness/patches {"account": "...", "image": "ami-..." | "*",
      "os": "AMAZON_LINUX_2023" | "WINDOWS" | ..., "patches": [{"id":
      "openssl.x86_64", "title": "...", "classification": "Security",
      "severity": "Critical", "age_days": 30, "reboot": true, "fails":
      false}], "installed": ["curl.x86_64"], "scan_seconds": 0,
      "install_seconds": 0, "output_lines": 0}

`output_lines` adds that many lines of package-manager chatter to a
command's output, so it passes SSM's 24,000-character inline limit.
"""

import json
import time
from datetime import datetime, timedelta, timezone

from moto.core.responses import ActionResult, EmptyResult
from moto.ssm import models as ssm_models
from moto.ssm import responses as ssm_responses
from moto.ssm.exceptions import SSMException, ValidationException


def DoesNotExistException(message: str) -> SSMException:
    return SSMException("DoesNotExistException", message)

# https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_GetCommandInvocation.html
#   "StandardOutputContent: The first 24,000 characters written by the
#    plugin to stdout."
OUTPUT_LIMIT = 24000

PATCH_DOCUMENT = "AWS-RunPatchBaseline"

# account -> {"*": spec, image_id: spec}
CATALOG: dict = {}
# (account, image_id) -> {"spec": spec, "installed": set}  (images made by CreateImage)
IMAGES: dict = {}
# (account, instance_id) -> InstancePatches
INSTANCES: dict = {}

DEFAULT_LINUX = {
    "os": "AMAZON_LINUX_2023",
    "patches": [
        {"id": "openssl-libs.x86_64", "classification": "Security", "severity": "Important", "age_days": 30},
        {"id": "tzdata.noarch", "classification": "Bugfix", "severity": "Low", "age_days": 30},
    ],
}
DEFAULT_WINDOWS = {
    "os": "WINDOWS",
    "patches": [
        {"id": "KB5034439", "classification": "SecurityUpdates", "severity": "Critical", "age_days": 30},
        {"id": "KB2267602", "classification": "DefinitionUpdates", "severity": "Unspecified", "age_days": 30},
    ],
}


def now() -> float:
    return time.time()


def configure(body: dict) -> None:
    """The control API: describe the patches of an image (or "*")."""
    account = str(body.pop("account"))
    image = str(body.pop("image", "*"))
    spec = {
        "os": body.get("os", "AMAZON_LINUX_2023"),
        "patches": body.get("patches", []),
        "installed": body.get("installed", []),
        "scan_seconds": float(body.get("scan_seconds", 0)),
        "install_seconds": float(body.get("install_seconds", 0)),
        "output_lines": int(body.get("output_lines", 0)),
    }
    for p in spec["patches"]:
        if "id" not in p:
            raise KeyError("every patch needs an id")
    CATALOG.setdefault(account, {})[image] = spec


def _linux(os_name: str) -> bool:
    return os_name not in ("WINDOWS", "MACOS")


class InstancePatches:
    """What one instance has, and what Patch Manager last reported."""

    def __init__(self, spec: dict, installed: set):
        self.spec = spec
        self.os = spec["os"]
        self.installed = set(installed) | set(spec.get("installed", []))
        self.pending_reboot: set = set()
        self.failed: set = set()
        self.states: dict = {}  # patch id -> state, as of the last operation
        self.installed_time: dict = {}
        self.baseline_id = ""
        self.patch_group = ""
        self.operation = ""
        self.op_start = 0.0
        self.op_end = 0.0
        self.last_no_reboot_install = None

    def patches(self):
        return self.spec["patches"]


def _instance(account: str, region: str, instance_id: str) -> InstancePatches:
    key = (account, instance_id)
    if key in INSTANCES:
        return INSTANCES[key]
    from moto.ec2.models import ec2_backends

    instance = ec2_backends[account][region].get_instance_by_id(instance_id)
    image_id = getattr(instance, "image_id", None)
    made = IMAGES.get((account, image_id))
    catalog = CATALOG.get(account, {})
    if made is not None:
        state = InstancePatches(made["spec"], made["installed"])
    else:
        windows = getattr(instance, "platform", None) == "windows"
        spec = catalog.get(image_id) or catalog.get("*") or (DEFAULT_WINDOWS if windows else DEFAULT_LINUX)
        spec = dict({"installed": [], "scan_seconds": 0, "install_seconds": 0, "output_lines": 0}, **spec)
        state = InstancePatches(spec, set())
    INSTANCES[key] = state
    return state


def on_image_created(account: str, instance_id: str, image_id: str) -> None:
    """CreateImage: the image has what its instance had on disk (installed
    patches, also those waiting for a reboot)."""
    state = INSTANCES.get((account, instance_id))
    if state is not None:
        IMAGES[(account, image_id)] = {"spec": state.spec, "installed": set(state.installed)}


def on_reboot(account: str, instance_id: str) -> None:
    """RebootInstances: patches waiting for a reboot take effect; Patch
    Manager reports them Installed at the next operation.
    https://docs.aws.amazon.com/systems-manager/latest/userguide/patch-manager-compliance-states.html
      "INSTALLED_PENDING_REBOOT: ... the patch was installed but the
       managed node hasn't been rebooted yet ... After a reboot, the patch
       state changes to INSTALLED." """
    state = INSTANCES.get((account, instance_id))
    if state is not None:
        state.pending_reboot.clear()


# ---------------------------------------------------------------------------
# Baselines.
# https://docs.aws.amazon.com/systems-manager/latest/userguide/patch-manager-patch-groups.html
#   the baseline registered to the instance's patch group ("Patch Group" or
#   "PatchGroup" tag) for its operating system is used; otherwise the
#   default baseline for the operating system.
# https://docs.aws.amazon.com/systems-manager/latest/userguide/patch-manager-predefined-and-custom-patch-baselines.html
#   predefined baselines approve security patches of severity Critical and
#   Important, 7 days after release (the model's default baseline).
# https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_PatchRule.html
#   ApproveAfterDays: "The number of days after the release date of each
#   patch matched by the rule that the patch is marked as approved ... Not
#   supported for Debian Server or Ubuntu Server."
#   EnableNonSecurity: "enables a patch baseline to apply non-security
#   updates ... The default value is false. Applies to Linux managed nodes
#   only."
# https://docs.aws.amazon.com/systems-manager/latest/userguide/patch-manager-approved-rejected-package-name-formats.html
#   ApprovedPatches are approved whatever the rules say; RejectedPatches
#   with RejectedPatchesAction BLOCK are never installed.

FIELD_OF = {
    "CLASSIFICATION": "classification",
    "SECTION": "classification",
    "SEVERITY": "severity",
    "MSRC_SEVERITY": "severity",
    "PRIORITY": "severity",
}


def _default_baseline(os_name: str) -> dict:
    security = ["SecurityUpdates", "CriticalUpdates"] if os_name == "WINDOWS" else ["Security"]
    severity_key = "MSRC_SEVERITY" if os_name == "WINDOWS" else "SEVERITY"
    return {
        "BaselineId": "default",
        "ApprovalRules": {
            "PatchRules": [
                {
                    "PatchFilterGroup": {
                        "PatchFilters": [
                            {"Key": "CLASSIFICATION", "Values": security},
                            {"Key": severity_key, "Values": ["Critical", "Important"]},
                        ]
                    },
                    "ApproveAfterDays": 7,
                }
            ]
        },
        "ApprovedPatches": [],
        "RejectedPatches": [],
    }


def _baseline_for(backend, account: str, region: str, instance_id: str, os_name: str):
    from moto.ec2.models import ec2_backends

    instance = ec2_backends[account][region].get_instance_by_id(instance_id)
    tags = {t["key"]: t["value"] for t in instance.get_tags()} if instance else {}
    group = tags.get("Patch Group") or tags.get("PatchGroup") or ""
    pg = backend.patch_groups.get(group) if group else None
    baseline_id = pg.associations.get(os_name) if pg is not None else None
    baseline = backend.baselines.get(baseline_id) if baseline_id else None
    if baseline is None:
        return group, _default_baseline(os_name)
    return group, baseline.to_json()


def _age_days(p: dict) -> float:
    if "released" in p:
        released = datetime.strptime(p["released"], "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp()
        return (now() - released) / 86400
    return float(p.get("age_days", 0))


def _matches(value: str, values) -> bool:
    return any(v == "*" or v.lower() == (value or "").lower() for v in values or [])


def _approved(p: dict, baseline: dict, os_name: str) -> bool:
    pid = p["id"]
    if pid in (baseline.get("RejectedPatches") or []):
        return False
    if pid in (baseline.get("ApprovedPatches") or []):
        return True
    for rule in (baseline.get("ApprovalRules") or {}).get("PatchRules") or []:
        filters = (rule.get("PatchFilterGroup") or {}).get("PatchFilters") or []
        ok = True
        for f in filters:
            field = FIELD_OF.get(f["Key"])
            if field is not None and not _matches(p.get(field, ""), f.get("Values")):
                ok = False
        if _linux(os_name) and os_name not in ("UBUNTU", "DEBIAN"):
            if p.get("classification") != "Security" and not rule.get("EnableNonSecurity", False):
                ok = False
        days = rule.get("ApproveAfterDays")
        if days is not None and os_name not in ("UBUNTU", "DEBIAN") and _age_days(p) < float(days):
            ok = False
        if ok:
            return True
    return False


def _report(state: InstancePatches, baseline: dict) -> None:
    """Patch compliance states after an operation.
    https://docs.aws.amazon.com/systems-manager/latest/userguide/patch-manager-compliance-states.html"""
    rejected = set(baseline.get("RejectedPatches") or [])
    states = {}
    for p in state.patches():
        pid = p["id"]
        approved = _approved(p, baseline, state.os)
        if pid in state.pending_reboot:
            states[pid] = "InstalledPendingReboot"
        elif pid in state.installed:
            states[pid] = "InstalledRejected" if pid in rejected else ("Installed" if approved else "InstalledOther")
        elif approved and pid in state.failed:
            states[pid] = "Failed"
        elif approved:
            states[pid] = "Missing"
    state.states = states


# ---------------------------------------------------------------------------
# AWS-RunPatchBaseline.
# https://docs.aws.amazon.com/systems-manager/latest/userguide/patch-manager-aws-runpatchbaseline.html
#   Operation Scan: "determines the patch compliance state ... and reports
#   this information back"; Install: installs approved patches that are
#   missing, then reports. RebootOption NoReboot: "Patch Manager does not
#   reboot ... patches installed ... are assigned a status of
#   InstalledPendingReboot". A patch that fails to install makes the
#   command fail.


def _output(state: InstancePatches, operation: str, baseline_id: str, group: str, events: list) -> str:
    """Text shaped like the document's log (per OS), with `output_lines`
    of chatter before the summary, as a long install prints."""
    stamp = datetime.now(tz=timezone.utc).strftime("%m/%d/%Y %H:%M:%S")
    lines = []
    if _linux(state.os):
        lines += ["/usr/bin/python3", "/usr/bin/dnf", f"{stamp} root [INFO]: Patch Group: {group}",
                  f"{stamp} root [INFO]: Baseline: {baseline_id}", f"{stamp} root [INFO]: Operation type: {operation}"]
        chatter = "{stamp} root [INFO]: Processing package metadata: {i:06d} repository entries read ........"
    else:
        lines += [f"Patch group: {group}", f"Baseline: {baseline_id}", f"Operation type: {operation}",
                  "Searching for updates with the Windows Update Agent API ..."]
        chatter = "{stamp} Windows Update: downloading and verifying update content, block {i:06d} ........"
    lines += [chatter.format(stamp=stamp, i=i) for i in range(state.spec.get("output_lines", 0))]
    lines += events
    counts = {}
    for s in state.states.values():
        counts[s] = counts.get(s, 0) + 1
    lines.append(f"{stamp} Summary: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return "\n".join(lines) + "\n"


def _finish(command, inv: dict, op: dict) -> None:
    backend = ssm_models.ssm_backends[command.account_id][command.backend_region]
    state = _instance(command.account_id, command.backend_region, inv["InstanceId"])
    group, baseline = _baseline_for(backend, command.account_id, command.backend_region, inv["InstanceId"], state.os)
    events = []
    failed = False
    if op["operation"] == "Install":
        for p in state.patches():
            pid = p["id"]
            if pid in state.installed or not _approved(p, baseline, state.os):
                continue
            if p.get("fails"):
                state.failed.add(pid)
                failed = True
                events.append(f"Failed to install {pid}: the package manager returned an error (HRESULT 0x80240022)")
                continue
            state.installed.add(pid)
            state.failed.discard(pid)
            state.installed_time[pid] = now()
            events.append(f"Installed {pid}")
            if p.get("reboot"):
                state.pending_reboot.add(pid)
                events.append(f"{pid} requires a reboot to complete the installation")
        state.last_no_reboot_install = now()
        if state.pending_reboot:
            events.append("RebootOption is NoReboot: the managed node was not rebooted; a reboot is required")
    _report(state, baseline)
    state.baseline_id = baseline["BaselineId"]
    state.patch_group = group
    state.operation = op["operation"]
    state.op_start = op["started"]
    state.op_end = now()
    full = _output(state, op["operation"], baseline["BaselineId"], group, events)
    inv["StandardOutputContent"] = full[:OUTPUT_LIMIT]
    inv["StandardErrorContent"] = ""
    inv["ResponseCode"] = 1 if failed else 0
    inv["Status"] = inv["StatusDetails"] = "Failed" if failed else "Success"
    _to_s3(command, inv, full)


def _to_s3(command, inv: dict, full: str) -> None:
    """https://docs.aws.amazon.com/systems-manager/latest/userguide/sysman-rc-setting-up.html
    (OutputS3BucketName: the complete output goes to S3; the console and
    GetCommandInvocation show the first 24,000 characters)."""
    bucket = command.output_s3_bucket_name
    if not bucket:
        return
    from moto.s3.models import s3_backends

    prefix = (command.output_s3_key_prefix or "").strip("/")
    key = "/".join(x for x in [prefix, command.command_id, inv["InstanceId"], "awsrunShellScript", "PatchLinux", "stdout"] if x)
    try:
        s3_backends[command.account_id]["aws"].put_object(bucket, key, full.encode())
        inv["StandardOutputUrl"] = f"https://s3.amazonaws.com/{bucket}/{key}"
    except Exception as e:  # a missing bucket: SSM reports the upload failure in stderr
        inv["StandardErrorContent"] = f"failed to upload output to s3://{bucket}/{key}: {e}"


def start(command, requested: list) -> None:
    """A new AWS-RunPatchBaseline command: in progress for the spec's
    scan/install time, then finished at the first look after that."""
    operation = ((command.parameters or {}).get("Operation") or ["Scan"])[0]
    command._harness_ops = {}
    for inv in command.invocations:
        if inv["InstanceId"] not in requested:
            continue
        state = _instance(command.account_id, command.backend_region, inv["InstanceId"])
        seconds = state.spec.get("install_seconds" if operation == "Install" else "scan_seconds", 0)
        command._harness_ops[inv["InstanceId"]] = {
            "operation": operation,
            "started": now(),
            "done_at": now() + float(seconds),
        }
        inv["Status"] = inv["StatusDetails"] = "InProgress"
        inv["ResponseCode"] = -1
        inv["StandardOutputContent"] = ""
    refresh(command)


def refresh(command) -> None:
    for inv in command.invocations:
        op = getattr(command, "_harness_ops", {}).get(inv["InstanceId"])
        if op is None or op.get("done") or inv["Status"] not in ("InProgress", "Pending"):
            continue
        if now() >= op["done_at"]:
            op["done"] = True
            _finish(command, inv, op)


def cancel(command, instance_ids: list) -> None:
    """https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_CancelCommand.html
    "Attempts to cancel the command specified by the Command ID. There is no
    guarantee that the command will be terminated and the underlying
    process stopped." The model stops it: nothing more is installed."""
    refresh(command)
    for inv in command.invocations:
        if instance_ids and inv["InstanceId"] not in instance_ids:
            continue
        if inv["Status"] in ("InProgress", "Pending"):
            op = getattr(command, "_harness_ops", {}).get(inv["InstanceId"])
            if op is not None:
                op["done"] = True
            inv["Status"] = inv["StatusDetails"] = "Cancelled"
            inv["ResponseCode"] = -1


# ---------------------------------------------------------------------------
# The APIs moto lacks.


def _backend(resp):
    return resp.ssm_backend


def _patch_json(state: InstancePatches, pid: str, s: str) -> dict:
    p = next(x for x in state.patches() if x["id"] == pid)
    return {
        "Title": p.get("title", pid),
        "KBId": pid,
        "Classification": p.get("classification", ""),
        "Severity": p.get("severity", ""),
        "State": s,
        "InstalledTime": state.installed_time.get(pid, 0.0),
    }


def describe_instance_patches(self):
    """https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_DescribeInstancePatches.html
    (filters: Classification, KBId, Severity, State; 10-100 per page)."""
    instance_id = self._get_param("InstanceId")
    filters = self._get_param("Filters", []) or []
    limit = int(self._get_param("MaxResults", 50) or 50)
    start_at = int(self._get_param("NextToken") or 0)
    state = INSTANCES.get((self.current_account, instance_id))
    rows = []
    if state is not None:
        rows = [_patch_json(state, pid, s) for pid, s in state.states.items()]
    for f in filters:
        key = {"Classification": "Classification", "KBId": "KBId", "Severity": "Severity", "State": "State"}.get(f["Key"])
        if key is None:
            raise ValidationException(f"Invalid filter key {f['Key']}")
        rows = [r for r in rows if r[key] in f.get("Values", [])]
    page = rows[start_at:start_at + limit]
    result = {"Patches": page}
    if start_at + limit < len(rows):
        result["NextToken"] = str(start_at + limit)
    return ActionResult(result)


def describe_instance_patch_states(self):
    """https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_InstancePatchState.html"""
    out = []
    for instance_id in self._get_param("InstanceIds", []) or []:
        state = INSTANCES.get((self.current_account, instance_id))
        if state is None or not state.operation:
            continue
        counts = {k: 0 for k in ("Installed", "InstalledOther", "InstalledPendingReboot", "InstalledRejected", "Missing", "Failed", "NotApplicable")}
        for s in state.states.values():
            counts[s] += 1
        row = {
            "InstanceId": instance_id,
            "PatchGroup": state.patch_group,
            "BaselineId": state.baseline_id,
            "Operation": state.operation,
            "OperationStartTime": state.op_start,
            "OperationEndTime": state.op_end,
            "InstalledCount": counts["Installed"],
            "InstalledOtherCount": counts["InstalledOther"],
            "InstalledPendingRebootCount": counts["InstalledPendingReboot"],
            "InstalledRejectedCount": counts["InstalledRejected"],
            "MissingCount": counts["Missing"],
            "FailedCount": counts["Failed"],
            "NotApplicableCount": counts["NotApplicable"],
            "RebootOption": "NoReboot",
        }
        if state.last_no_reboot_install:
            row["LastNoRebootInstallOperationTime"] = state.last_no_reboot_install
        out.append(row)
    return ActionResult({"InstancePatchStates": out})


def _baseline(self):
    baseline_id = self._get_param("BaselineId")
    b = _backend(self).baselines.get(baseline_id)
    if b is None:
        # https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_GetPatchBaseline.html
        raise DoesNotExistException(f"Patch Baseline {baseline_id} does not exist.")
    return b


def _baseline_response(b, backend) -> dict:
    out = {k: v for k, v in b.to_json().items() if v is not None}
    out["Name"] = out.pop("BaselineName", b.name)
    out.pop("DefaultBaseline", None)
    out["PatchGroups"] = [g for g, pg in backend.patch_groups.items() if b.id in pg.associations.values()]
    return out


def get_patch_baseline(self):
    b = _baseline(self)
    return ActionResult(_baseline_response(b, _backend(self)))


def update_patch_baseline(self):
    """https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_UpdatePatchBaseline.html
    "Replace: If True, then all fields that are required by the
    CreatePatchBaseline operation are also required for this API request.
    Optional fields that aren't specified are set to null." """
    b = _baseline(self)
    replace = bool(self._get_param("Replace", False))
    fields = {
        "Name": "name",
        "GlobalFilters": "global_filters",
        "ApprovalRules": "approval_rules",
        "ApprovedPatches": "approved_patches",
        "ApprovedPatchesComplianceLevel": "approved_patches_compliance_level",
        "ApprovedPatchesEnableNonSecurity": "approved_patches_enable_non_security",
        "RejectedPatches": "rejected_patches",
        "RejectedPatchesAction": "rejected_patches_action",
        "Description": "description",
        "Sources": "sources",
    }
    for param, attr in fields.items():
        value = self._get_param(param)
        if value is not None:
            setattr(b, attr, value)
        elif replace and param != "Name":
            setattr(b, attr, [] if param in ("ApprovedPatches", "RejectedPatches", "Sources") else None)
    return ActionResult(_baseline_response(b, _backend(self)))


def delete_patch_baseline(self):
    """https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_DeletePatchBaseline.html
    (ResourceInUseException: "the patch baseline is in use" — registered to
    a patch group)."""
    b = _baseline(self)
    backend = _backend(self)
    if any(b.id in pg.associations.values() for pg in backend.patch_groups.values()):
        raise SSMException("ResourceInUseException", f"Patch Baseline {b.id} is registered to a patch group.")
    del backend.baselines[b.id]
    return ActionResult({"BaselineId": b.id})


def deregister_patch_baseline_for_patch_group(self):
    """https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_DeregisterPatchBaselineForPatchGroup.html
    "Removes a patch group from a patch baseline." (moto keeps it.)"""
    baseline_id = self._get_param("BaselineId")
    group = self._get_param("PatchGroup")
    backend = _backend(self)
    pg = backend.patch_groups.get(group)
    if pg is None or baseline_id not in pg.associations.values():
        raise DoesNotExistException(f"Patch Baseline {baseline_id} is not registered to patch group {group}.")
    for os_name, bid in list(pg.associations.items()):
        if bid == baseline_id:
            del pg.associations[os_name]
    return ActionResult({"BaselineId": baseline_id, "PatchGroup": group})


def describe_patch_baselines(self):
    """https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_DescribePatchBaselines.html
    (NAME_PREFIX: baselines whose name begins with the value)."""
    filters = self._get_param("Filters", []) or []
    rows = list(_backend(self).baselines.values())
    for f in filters:
        if f["Key"] == "NAME_PREFIX":
            rows = [b for b in rows if any(b.name.startswith(v) for v in f.get("Values", []))]
    return ActionResult({"BaselineIdentities": [
        {"BaselineId": b.id, "BaselineName": b.name, "OperatingSystem": b.operating_system,
         "BaselineDescription": b.description or "", "DefaultBaseline": False}
        for b in rows
    ]})


def cancel_command(self):
    command_id = self._get_param("CommandId")
    command = _backend(self).get_command_by_id(command_id)
    cancel(command, self._get_param("InstanceIds", []) or [])
    return EmptyResult()


_validate_resource = ssm_models.SimpleSystemManagerBackend._validate_resource_type_and_id


def _patched_validate_resource(self, resource_type, resource_id):
    # https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_AddTagsToResource.html
    # (ResourceType PatchBaseline is taggable; CreatePatchBaseline takes Tags.)
    if resource_type == "PatchBaseline":
        if resource_id not in self.baselines:
            raise ssm_models.InvalidResourceId()
        return resource_id
    return _validate_resource(self, resource_type, resource_id)


def install() -> None:
    ssm_models.SimpleSystemManagerBackend._validate_resource_type_and_id = _patched_validate_resource
    R = ssm_responses.SimpleSystemManagerResponse
    R.describe_instance_patches = describe_instance_patches
    R.describe_instance_patch_states = describe_instance_patch_states
    R.get_patch_baseline = get_patch_baseline
    R.update_patch_baseline = update_patch_baseline
    R.delete_patch_baseline = delete_patch_baseline
    R.deregister_patch_baseline_for_patch_group = deregister_patch_baseline_for_patch_group
    R.describe_patch_baselines = describe_patch_baselines
    R.cancel_command = cancel_command
    get_invocation = ssm_models.Command.get_invocation

    def _patched_get_invocation(self, instance_id, plugin_name):
        refresh(self)
        return get_invocation(self, instance_id, plugin_name)

    ssm_models.Command.get_invocation = _patched_get_invocation
