"""The operation record (issue 12): with HARNESS_RECORD_OPERATIONS=<file>,
every distinct (service, action, app) the harness is asked for is appended
to <file> as one JSON line, so a check after the whole suite can prove that
`repave iam-policy` grants each operation the provider made
(crates/aws/tests/iam_coverage.rs). Not AWS behaviour: a recorder.

- service: the signing name of the request's credential scope
  (`Credential=AKID/date/region/<service>/aws4_request`), which is the
  service's IAM prefix for the services repave calls (ec2, autoscaling,
  ssm, elasticloadbalancing for Classic and v2 alike, iam, sts, kms);
- action: the query protocol's `Action` (in the body or the query string),
  or the operation after the dot of the JSON protocol's `X-Amz-Target`;
- app: the SDK user agent's `app/<name>` (repave's provider says
  `app/repave`, its `iam-policy` reads `app/repave-iam-policy`; test setup
  through plain SDK clients has none).
"""

import io
import json
import os
import re
import threading
from urllib.parse import parse_qs

RECORD = os.environ.get("HARNESS_RECORD_OPERATIONS")
_seen: set = set()
_lock = threading.Lock()


def _field(environ, body: bytes):
    auth = environ.get("HTTP_AUTHORIZATION", "")
    m = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/aws4_request", auth)
    service = m.group(1) if m else "?"
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        action = target.rsplit(".", 1)[-1]
    else:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        form = parse_qs(body.decode("utf-8", "replace"))
        action = (form.get("Action") or query.get("Action") or ["?"])[0]
    agent = environ.get("HTTP_X_AMZ_USER_AGENT", "") + " " + environ.get("HTTP_USER_AGENT", "")
    app = re.search(r"(?:^|\s)app/([^\s]+)", agent)
    return service, action, app.group(1) if app else ""


def record(environ) -> None:
    """Note this request's operation; leaves the body readable for moto."""
    if not RECORD:
        return
    size = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(size)
    environ["wsgi.input"] = io.BytesIO(body)
    key = _field(environ, body)
    with _lock:
        if key in _seen:
            return
        _seen.add(key)
        with open(RECORD, "a", encoding="utf-8") as f:
            f.write(json.dumps({"service": key[0], "action": key[1], "app": key[2]}) + "\n")
