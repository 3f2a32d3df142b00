"""moto's IAM enforcement as AWS enforces it (issue 12): two patches.

1. Signature V4 over the bytes received. With IAM enforcement on (`INITIAL_NO_AUTH_ACTION_COUNT`,
`/moto-api/reset-auth`), moto recomputes each request's signature from
`raw_body or data`. For a form-encoded body (the query protocol of EC2,
Auto Scaling and ELB) werkzeug has consumed the raw body while parsing the
form, so `raw_body` is empty and moto re-encodes the parsed form with
Python's `urlencode`: a space becomes `+`. botocore encodes the same way,
so boto3's requests verify; aws-sdk-rust percent-encodes a space as `%20`
(RFC 3986, which AWS accepts), so every request whose parameters hold a
space — CreateImage's name and description, CreateTags' `Patch Group` —
hashes to another payload and fails with AuthFailure (EC2) or
SignatureDoesNotMatch, whoever the user and whatever the policy.

AWS signs and verifies the payload as sent: the canonical request's
HashedPayload is the hash of the request body
(https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html,
"Step 1: Create a canonical request"). The patch: the harness keeps each
request's body as received (per thread: the server handles a request on
one thread) and moto's signature check hashes that.

2. Access denied in the protocol's own error shape. moto raises its
AccessDenied as XML for every service; a JSON-protocol service (SSM)
answers in JSON on AWS — `{"__type": "AccessDeniedException", "message":
"User: ... is not authorized to perform: ssm:GetParameterHistory ..."}`
(AWS JSON 1.1 protocol, "Operation error serialization"; SSM API
reference, Common Errors: AccessDeniedException, HTTP 400). The SDK could
not parse moto's XML and reported a malformed response instead of the
missing permission.
"""

import io
import threading

from moto.core.exceptions import JsonRESTError
from moto.iam import access_control

_received = threading.local()


def remember_body(environ) -> None:
    """Keep this request's body as received; leaves it readable for moto."""
    size = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(size) if size else b""
    environ["wsgi.input"] = io.BytesIO(body)
    _received.body = body


_original_create_aws_request = access_control.IAMRequestBase._create_aws_request


def _create_aws_request(self):
    request = _original_create_aws_request(self)
    body = getattr(_received, "body", None)
    if body:
        request.data = body
    return request


access_control.IAMRequestBase._create_aws_request = _create_aws_request


_original_raise_access_denied = access_control.IAMRequest._raise_access_denied


def _raise_access_denied(self):
    if self._headers.get("X-Amz-Target"):
        raise JsonRESTError(
            "AccessDeniedException",
            f"User: {self._access_key.arn} is not authorized to perform: {self._action} "
            f"because no identity-based policy allows the {self._action} action",
        )
    _original_raise_access_denied(self)


access_control.IAMRequest._raise_access_denied = _raise_access_denied
