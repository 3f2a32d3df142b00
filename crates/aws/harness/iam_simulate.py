"""IAM SimulatePrincipalPolicy for the AWS-behaviour harness.

moto has no SimulatePrincipalPolicy. AWS's
(https://docs.aws.amazon.com/IAM/latest/APIReference/API_SimulatePrincipalPolicy.html):
"Simulate how a set of IAM policies attached to an IAM entity works with a
list of API operations and AWS resources to determine the policies'
effective permissions. The entity can be an IAM user, group, or role. If
you specify a user, then the simulation also includes all of the policies
that are attached to groups that the user belongs to." Each action is
evaluated against each resource ("If you do not specify any resources, the
default is *"), with the caller's `ContextEntries` as the condition keys'
values; the decision is `allowed`, `explicitDeny` or `implicitDeny`.

Evaluation follows the policy evaluation logic
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html):
an explicit Deny in any applicable statement wins, else any applicable
Allow allows, else the request is implicitly denied. A statement applies
when its Action (or NotAction) and Resource (or NotResource) match, with
`*` and `?` wildcards, actions case-insensitively, and every condition
holds (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html):
a key missing from the context makes a positive operator false and a
negated one true, `...IfExists` true, and `Null` tests presence;
`ForAnyValue:` / `ForAllValues:` compare value sets. Only the identity's
own policies are evaluated (no permissions boundary, SCP or resource
policy: the harness has none).
"""

import fnmatch
import json
import re
from urllib.parse import unquote

from moto.core.responses import ActionResult
from moto.iam import responses as iam_responses
from moto.iam.exceptions import NotFoundException


def _documents(backend, arn: str) -> list:
    """The policy documents of the user (with its groups') or role `arn`."""
    m = re.fullmatch(r"arn:[^:]+:iam::\d{12}:(user|role|group)/(?:.*/)?([^/]+)", arn or "")
    if not m:
        raise NotFoundException(f"The entity {arn} is not a user, group or role")
    kind, name = m.groups()
    try:
        if kind == "user":
            entity = backend.get_user(name)
            holders = [entity] + list(backend.get_groups_for_user(name))
        elif kind == "role":
            holders = [backend.get_role(name)]
        else:
            holders = [backend.get_group(name)]
    except Exception:
        raise NotFoundException(f"The {kind} with name {name} cannot be found.")
    docs = []
    for h in holders:
        docs += list(h.policies.values())
        for p in h.managed_policies.values():
            docs += [v.document for v in p.versions if v.is_default]
    out = []
    for d in docs:
        if isinstance(d, str):
            d = json.loads(unquote(d)) if d.lstrip().startswith("%") else json.loads(d)
        out.append(d)
    return out


def _as_list(v) -> list:
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def _wild(pattern: str, value: str, case: bool) -> bool:
    if not case:
        pattern, value = pattern.lower(), value.lower()
    return fnmatch.fnmatchcase(value, pattern)


def _matches(statement: dict, key: str, value: str, case: bool) -> bool:
    if key in statement:
        return any(_wild(p, value, case) for p in _as_list(statement[key]))
    negated = "Not" + key
    if negated in statement:
        return not any(_wild(p, value, case) for p in _as_list(statement[negated]))
    return False


def _compare(op: str, want: str, have: str) -> bool:
    if op in ("StringEquals", "ArnEquals"):
        return want == have
    if op == "StringEqualsIgnoreCase":
        return want.lower() == have.lower()
    if op in ("StringLike", "ArnLike"):
        return fnmatch.fnmatchcase(have, want)
    if op == "Bool":
        return want.lower() == have.lower()
    if op.startswith("Numeric"):
        a, b = float(have), float(want)
        return {"NumericEquals": a == b, "NumericLessThan": a < b, "NumericLessThanEquals": a <= b,
                "NumericGreaterThan": a > b, "NumericGreaterThanEquals": a >= b}.get(op, False)
    raise ValueError(f"condition operator {op} is not modelled by the harness")


def _condition_holds(conditions: dict, context: dict) -> bool:
    for raw_op, keys in (conditions or {}).items():
        qualifier, _, op = raw_op.rpartition(":")
        if_exists = op.endswith("IfExists")
        op = op[: -len("IfExists")] if if_exists else op
        for key, wanted in keys.items():
            have = context.get(key.lower())
            wanted = [str(w) for w in _as_list(wanted)]
            if op == "Null":
                if (have is None) != (wanted[0].lower() == "true"):
                    return False
                continue
            negated = "Not" in op
            positive = op.replace("Not", "")
            if have is None:
                if not (if_exists or negated):
                    return False
                continue
            if qualifier == "ForAllValues":
                ok = all(any(_compare(positive, w, h) for w in wanted) for h in have)
            else:
                ok = any(_compare(positive, w, h) for w in wanted for h in have)
            if ok == negated:
                return False
    return True


def decide(documents: list, action: str, resource: str, context: dict):
    """(decision, matched statement ids) for one action on one resource."""
    decision, matched = "implicitDeny", []
    for doc in documents:
        for st in _as_list(doc.get("Statement")):
            if not _matches(st, "Action", action, case=False):
                continue
            if not _matches(st, "Resource", resource, case=True):
                continue
            if not _condition_holds(st.get("Condition"), context):
                continue
            matched.append(st.get("Sid", ""))
            if st.get("Effect") == "Deny":
                return "explicitDeny", matched
            decision = "allowed"
    return decision, matched


def simulate_principal_policy(self):
    source = self._get_param("PolicySourceArn")
    actions = self._get_param("ActionNames", [])
    resources = self._get_param("ResourceArns", []) or ["*"]
    context = {
        e["ContextKeyName"].lower(): [str(v) for v in e.get("ContextKeyValues", [])]
        for e in self._get_param("ContextEntries", [])
    }
    documents = _documents(self.backend, source)
    results = []
    for action in actions:
        for resource in resources:
            decision, matched = decide(documents, action, resource, context)
            results.append({
                "EvalActionName": action,
                "EvalResourceName": resource,
                "EvalDecision": decision,
                "MatchedStatements": [{"SourcePolicyId": sid} for sid in matched],
                "MissingContextValues": [],
            })
    return ActionResult({"EvaluationResults": results, "IsTruncated": False})


def install() -> None:
    iam_responses.IamResponse.simulate_principal_policy = simulate_principal_policy
