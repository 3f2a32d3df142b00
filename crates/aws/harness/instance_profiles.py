"""IAM instance profiles are eventually consistent for EC2.

IAM "is eventually consistent": a change "takes time to become visible"
to the services that use it, and the IAM User Guide's troubleshooting
section names the symptom — launching an instance with a role (instance
profile) created moments ago fails
(https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_general.html#troubleshoot_general_eventual-consistency,
https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_iam-ec2.html).
EC2 answers RunInstances with
`InvalidParameterValue: Value (NAME) for parameter iamInstanceProfile.name
is invalid. Invalid IAM Instance Profile name` (`...iamInstanceProfile.arn
is invalid. Invalid IAM Instance Profile ARN` by ARN).

Patched: per account (`/_harness/account {"profile_propagation_seconds": N}`,
0 by default so other tests see a settled account), RunInstances naming a
profile created, or given its role, less than N seconds ago is refused so;
every refusal is counted (`/_harness/report`: profile_refusals). Auto
Scaling's own launches retry internally on AWS and are not patched.
"""

from moto.ec2.exceptions import EC2ClientError
from moto.ec2.responses import instances as instance_responses
from moto.iam import models as iam_models

# account -> refusals so far.
REFUSALS: dict = {}

_accounts = None
_now = None


def _stamp(profile) -> None:
    if profile is not None:
        profile._harness_changed_at = _now()


_create = iam_models.IAMBackend.create_instance_profile


def _patched_create(self, *args, **kwargs):
    profile = _create(self, *args, **kwargs)
    _stamp(profile)
    return profile


_add_role = iam_models.IAMBackend.add_role_to_instance_profile


def _patched_add_role(self, profile_name, role_name):
    out = _add_role(self, profile_name, role_name)
    _stamp(self.get_instance_profile(profile_name))
    return out


_run_instances = None  # what was installed before (aws_harness's own patch)


def _patched_run_instances(self):
    wait = float(_accounts.get(self.current_account, {}).get("profile_propagation_seconds", 0))
    name = self._get_param("IamInstanceProfile.Name")
    arn = self._get_param("IamInstanceProfile.Arn")
    if wait > 0 and (name or arn):
        backend = iam_models.iam_backends[self.current_account][self.partition]
        try:
            profile = backend.get_instance_profile(name) if name else backend.get_instance_profile_by_arn(arn)
        except Exception:
            profile = None
        if profile is not None and _now() < getattr(profile, "_harness_changed_at", 0.0) + wait:
            REFUSALS[self.current_account] = REFUSALS.get(self.current_account, 0) + 1
            if name:
                msg = f"Value ({name}) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name"
            else:
                msg = f"Value ({arn}) for parameter iamInstanceProfile.arn is invalid. Invalid IAM Instance Profile ARN"
            raise EC2ClientError("InvalidParameterValue", msg)
    return _run_instances(self)


def install(accounts: dict, now) -> None:
    global _accounts, _now, _run_instances
    _accounts, _now = accounts, now
    _run_instances = instance_responses.InstanceResponse.run_instances
    iam_models.IAMBackend.create_instance_profile = _patched_create
    iam_models.IAMBackend.add_role_to_instance_profile = _patched_add_role
    instance_responses.InstanceResponse.run_instances = _patched_run_instances
