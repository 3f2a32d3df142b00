"""STS AssumeRole as AWS does it, for the AWS-behaviour harness.

moto's AssumeRole hands out credentials for any role ARN, existing or not,
to anyone, for any duration, and accepts them for ever. AWS:

  - the role must exist and its trust policy must allow the caller
    `sts:AssumeRole`, its conditions (`sts:ExternalId`) included; otherwise
    AccessDenied "User: ARN is not authorized to perform: sts:AssumeRole on
    resource: ROLE"
    (https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html,
    "the role's trust policy ... specifies who can assume the role";
    https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_common-scenarios_third-party.html,
    the external id condition;
    https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_principal.html,
    an account principal (`123456789012`, `arn:aws:iam::123456789012:root`)
    trusts every principal of that account; a role ARN trusts its sessions);
  - DurationSeconds is between 900 and the role's MaxSessionDuration
    (API_AssumeRole.html, "DurationSeconds"; ValidationError otherwise);
  - the credentials expire after DurationSeconds: a request signed with
    them afterwards gets ExpiredToken, "The security token included in the
    request is expired" (https://docs.aws.amazon.com/STS/latest/APIReference/CommonErrors.html).

Test timing, not AWS behaviour: `POST /_harness/account` with
`{"account": ROLE_ACCOUNT, "sts_min_session_seconds": 5}` lowers the 900 s
minimum for that account's roles, so a test sees a session expire and be
renewed in seconds.
"""

import fnmatch
import json
import re
import time
from urllib.parse import unquote

from moto.iam.models import iam_backends
from moto.sts import models as sts_models
from moto.sts import responses as sts_responses
from moto.sts.exceptions import STSClientError, STSValidationError
from moto.utilities.utils import get_partition

# Access key id of assumed-role credentials -> expiry (epoch seconds).
EXPIRY: dict = {}

ACCOUNTS: dict = {}


class AccessDenied(STSClientError):
    def __init__(self, message: str):
        super().__init__("AccessDenied", message)


def _caller_role_arn(caller_arn: str) -> str:
    # arn:aws:sts::A:assumed-role/NAME/SESSION -> arn:aws:iam::A:role/NAME
    m = re.match(r"arn:([^:]+):sts::(\d{12}):assumed-role/([^/]+)/", caller_arn)
    if m:
        return f"arn:{m.group(1)}:iam::{m.group(2)}:role/{m.group(3)}"
    return caller_arn


def _principal_matches(entry: str, caller_arn: str, caller_account: str) -> bool:
    if entry == "*":
        return True
    if re.fullmatch(r"\d{12}", entry):
        return entry == caller_account
    m = re.fullmatch(r"arn:[^:]+:iam::(\d{12}):root", entry)
    if m:
        return m.group(1) == caller_account
    caller = _caller_role_arn(caller_arn)
    if entry == caller:
        return True
    # A role with a path: STS session ARNs drop the path.
    m = re.fullmatch(r"(arn:[^:]+:iam::\d{12}:role/)(?:.*/)?([^/]+)", entry)
    return bool(m and caller == m.group(1) + m.group(2))


def _as_list(v):
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def _condition_holds(condition: dict, external_id) -> bool:
    for op, keys in (condition or {}).items():
        for key, values in keys.items():
            if key.lower() != "sts:externalid" or op not in ("StringEquals", "StringLike"):
                # Conditions the harness cannot evaluate never grant.
                return False
            values = _as_list(values)
            if external_id is None:
                return False
            if op == "StringEquals" and external_id not in values:
                return False
            if op == "StringLike" and not any(fnmatch.fnmatchcase(external_id, v) for v in values):
                return False
    return True


def _actions_match(actions) -> bool:
    return any(a in ("sts:AssumeRole", "sts:*", "*") for a in _as_list(actions))


def trust_allows(document: str, caller_arn: str, caller_account: str, external_id) -> bool:
    doc = json.loads(unquote(document)) if isinstance(document, str) else document
    allowed = False
    for st in _as_list(doc.get("Statement")):
        principals = st.get("Principal", {})
        entries = ["*"] if principals == "*" else _as_list(principals.get("AWS"))
        if not _actions_match(st.get("Action")):
            continue
        if not any(_principal_matches(e, caller_arn, caller_account) for e in entries):
            continue
        if not _condition_holds(st.get("Condition"), external_id):
            continue
        if st.get("Effect") == "Deny":
            return False
        if st.get("Effect") == "Allow":
            allowed = True
    return allowed


_assume_role_response = sts_responses.TokenResponse.assume_role


def _patched_assume_role(self):
    role_arn = self._get_param("RoleArn")
    external_id = self._get_param("ExternalId")
    duration = self._get_int_param("DurationSeconds", 3600)
    caller_account = self.current_account
    _, caller_arn, _ = sts_models.sts_backends[caller_account][self.partition].get_caller_identity(
        self.get_access_key(), self.region
    )
    denied = f"User: {caller_arn} is not authorized to perform: sts:AssumeRole on resource: {role_arn}"
    m = re.fullmatch(r"arn:([^:]+):iam::(\d{12}):role/(.+)", role_arn or "")
    if not m:
        raise STSValidationError(f"{role_arn} is invalid")
    role_account = m.group(2)
    try:
        role = iam_backends[role_account][get_partition(self.region)].get_role_by_arn(role_arn)
    except Exception:
        raise AccessDenied(denied)
    if not trust_allows(role.assume_role_policy_document, caller_arn, caller_account, external_id):
        raise AccessDenied(denied)
    minimum = float(ACCOUNTS.get(role_account, {}).get("sts_min_session_seconds", 900))
    maximum = int(role.max_session_duration or 3600)
    if duration < minimum:
        raise STSValidationError(
            f"1 validation error detected: Value '{duration}' at 'durationSeconds' failed to satisfy "
            f"constraint: Member must have value greater than or equal to {int(minimum)}"
        )
    if duration > maximum:
        raise STSValidationError(
            "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
        )
    return _assume_role_response(self)


_backend_assume_role = sts_models.STSBackend.assume_role


def _patched_backend_assume_role(self, *args, **kwargs):
    role = _backend_assume_role(self, *args, **kwargs)
    EXPIRY[role.access_key_id] = time.time() + float(kwargs.get("duration", 3600))
    return role


def expired_response(environ, start_response):
    """The ExpiredToken answer for a request signed with expired assumed-role
    credentials, else None."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    m = re.search(r"Credential=([A-Z0-9]+)/", auth)
    if not m or m.group(1) not in EXPIRY or time.time() < EXPIRY[m.group(1)]:
        return None
    message = "The security token included in the request is expired"
    if environ.get("HTTP_X_AMZ_TARGET"):
        body = json.dumps({"__type": "ExpiredTokenException", "message": message})
        start_response("400 Bad Request", [("Content-Type", "application/x-amz-json-1.1")])
        return [body.encode()]
    size = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(size).decode("utf-8", "replace")
    if "Version=2016-11-15" in raw:  # EC2's own error shape
        body = (
            "<Response><Errors><Error><Code>ExpiredToken</Code>"
            f"<Message>{message}</Message></Error></Errors><RequestID>harness</RequestID></Response>"
        )
    else:
        body = (
            "<ErrorResponse><Error><Type>Sender</Type><Code>ExpiredToken</Code>"
            f"<Message>{message}</Message></Error><RequestId>harness</RequestId></ErrorResponse>"
        )
    start_response("400 Bad Request", [("Content-Type", "text/xml")])
    return [body.encode()]


def configure_account(account: str, settings: dict) -> None:
    if "sts_min_session_seconds" in settings:
        ACCOUNTS.setdefault(account, {})["sts_min_session_seconds"] = float(settings["sts_min_session_seconds"])


def install() -> None:
    sts_responses.TokenResponse.assume_role = _patched_assume_role
    sts_models.STSBackend.assume_role = _patched_backend_assume_role
