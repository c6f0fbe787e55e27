"""Policies and their evaluation (pure: no I/O).

A policy is `{name, version, rules, enabled}`; a rule is `{effect: Allow|Deny,
resource: glob or list of globs, action: list of globs, condition}`. Policies have no
subject: a rule applies to whoever its condition (`'admin' in user.roles`) accepts.
For one request, every rule of every enabled policy whose resource, action and
condition match is considered: an explicit Deny wins, otherwise a matching Allow
allows, otherwise the request is refused.

Resources read `<kind>:<id>` (`users:0193…`, `servers:web-01`, `policies:*` for the
collection); actions are verbs (`read`, `list`, `create`, `update`, `delete`, `execute`,
`cancel`, …). Globs are `fnmatch` patterns, case-sensitive; `*` alone matches anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any, Literal

from control_center.conditions import Condition, ConditionError, Value, parse_condition
from orchestrator.errors import InvalidInput
from orchestrator.http.access import Principal

EFFECTS = ("Allow", "Deny")
MAX_RULES = 100
MAX_PATTERNS = 100

Effect = Literal["Allow", "Deny"]


@dataclass(frozen=True, slots=True)
class Rule:
    effect: Effect
    resources: tuple[str, ...]
    actions: tuple[str, ...]
    condition: Condition | None = None

    def applies(self, action: str, resource: str, context: Mapping[str, Value]) -> bool:
        if not any(fnmatchcase(resource, pattern) for pattern in self.resources):
            return False
        if not any(fnmatchcase(action, pattern) for pattern in self.actions):
            return False
        return self.condition is None or self.condition.evaluate(context)


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    id: str
    name: str
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str
    #: The id of the policy whose rule decided, when one did.
    policy_id: str | None = None


class PolicyEngine:
    """The enabled policies of one moment, compiled, answering `evaluate`."""

    def __init__(self, policies: Iterable[CompiledPolicy], revision: int = 0) -> None:
        self.policies = tuple(policies)
        self.revision = revision

    def evaluate(
        self,
        principal: Principal,
        action: str,
        resource: str,
        context: Mapping[str, Any] | None = None,
    ) -> Decision:
        variables = condition_context(principal, action, resource, context or {})
        allowed: Decision | None = None
        for policy in self.policies:
            for index, rule in enumerate(policy.rules):
                if not rule.applies(action, resource, variables):
                    continue
                where = f"policy '{policy.name}' rule {index}"
                if rule.effect == "Deny":
                    return Decision(False, f"denied by {where}", policy.id)
                allowed = allowed or Decision(True, f"allowed by {where}", policy.id)
        return allowed or Decision(False, "no policy allows it")


#: The role the default policies and the lockout rules know as the administrators'.
ADMIN_ROLE = "admin"
#: What some enabled administrator must always keep being allowed: managing policies is
#: the way to undo any other mistake in them.
MANAGE_POLICIES = ("update", "policies:*")


def lockout(
    engine: PolicyEngine,
    administrators: Iterable[Principal],
    context: Mapping[str, Any] | None = None,
) -> Decision | None:
    """None when one of `administrators` may manage policies under `engine`; otherwise
    the refusal of the first of them (or why there is nobody to ask)."""
    action, resource = MANAGE_POLICIES
    refused: Decision | None = None
    for principal in administrators:
        decision = engine.evaluate(principal, action, resource, context)
        if decision.allowed:
            return None
        refused = refused or decision
    return refused or Decision(False, "there is no enabled administrator")


def condition_context(
    principal: Principal, action: str, resource: str, context: Mapping[str, Any]
) -> dict[str, Value]:
    """The values condition names read: the principal, the request and the clock."""
    now = context.get("now")
    if not isinstance(now, datetime):
        now = datetime.now(UTC)
    now = now.astimezone(UTC)
    return {
        "user.id": principal.user_id,
        "user.username": principal.username,
        "user.role": principal.primary_role,
        "user.roles": tuple(principal.roles),
        "user.via": principal.via,
        "resource": resource,
        "resource.owner": str(context.get("owner") or ""),
        "action": action,
        "request.ip": str(context.get("ip") or ""),
        "request.method": str(context.get("method") or ""),
        "time.hour": now.hour,
        "time.weekday": now.weekday(),
    }


def compile_rules(raw: Any) -> tuple[Rule, ...]:
    """Check rules as stored or sent; `InvalidInput` names the rule and field at fault."""
    if not isinstance(raw, list):
        raise InvalidInput("rules: must be a list")
    if len(raw) > MAX_RULES:
        raise InvalidInput(f"rules: at most {MAX_RULES} rules per policy")
    return tuple(_compile_rule(index, item) for index, item in enumerate(raw))


def _compile_rule(index: int, raw: Any) -> Rule:
    where = f"rules[{index}]"
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"{where}: must be an object")
    unknown = set(raw) - {"effect", "resource", "action", "condition", "description"}
    if unknown:
        raise InvalidInput(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    effect = raw.get("effect")
    if effect not in EFFECTS:
        raise InvalidInput(f"{where}.effect: must be Allow or Deny")
    resources = _patterns(f"{where}.resource", raw.get("resource"))
    actions = _patterns(f"{where}.action", raw.get("action", ["*"]))
    condition: Condition | None = None
    source = raw.get("condition")
    if source is not None and not (isinstance(source, str) and not source.strip()):
        try:
            condition = parse_condition(source)
        except ConditionError as exc:
            raise InvalidInput(f"{where}.condition: {exc}") from None
    return Rule(effect, resources, actions, condition)


def _patterns(where: str, raw: Any) -> tuple[str, ...]:
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items:
        raise InvalidInput(f"{where}: must be a pattern or a non-empty list of patterns")
    if len(items) > MAX_PATTERNS:
        raise InvalidInput(f"{where}: at most {MAX_PATTERNS} patterns")
    for item in items:
        if not isinstance(item, str) or not item or len(item) > 300:
            raise InvalidInput(f"{where}: each pattern must be a string of 1 to 300 characters")
    return tuple(items)


def compile_policy(policy_id: str, name: str, rules: Sequence[Any]) -> CompiledPolicy:
    return CompiledPolicy(policy_id, name, compile_rules(list(rules)))


#: The areas an operator may change: everything that runs as a workflow.
OPERATOR_AREAS = [
    "workflows:*",
    "tasks:*",
    "batches:*",
    "rollback:*",
    "checkpoints:*",
    # The generic entry point (`POST /providers/...`); each item needs its own grant.
    "providers:*",
    "servers:*",
    "taskservs:*",
    "clusters:*",
    "vms:*",
    "deployments:*",
    # Not the host's `storage:*`, `network:*`, `host-users:*`: operators read the host
    # but do not change it (docs/host.md).
    "containers:*",
    "docker:*",
    "kubernetes:*",
]

#: Created on the control center's first start; editable like any other policy.
DEFAULT_POLICIES: list[dict[str, Any]] = [
    {
        "name": "admin_access_policy",
        "description": "Administrators may do everything.",
        "rules": [
            {
                "effect": "Allow",
                "resource": "*",
                "action": ["*"],
                "condition": "'admin' in user.roles",
            }
        ],
    },
    {
        "name": "operator_access_policy",
        "description": "Operators read everything and run workflows, batches, rollbacks "
        "and checkpoints; they do not manage users or policies.",
        "rules": [
            {
                "effect": "Allow",
                "resource": "*",
                "action": ["read", "list"],
                "condition": "'operator' in user.roles",
            },
            {
                "effect": "Allow",
                "resource": OPERATOR_AREAS,
                "action": ["*"],
                "condition": "'operator' in user.roles",
            },
        ],
    },
    {
        "name": "viewer_access_policy",
        "description": "Viewers only read and list.",
        "rules": [
            {
                "effect": "Allow",
                "resource": "*",
                "action": ["read", "list"],
                "condition": "'viewer' in user.roles",
            }
        ],
    },
    {
        # Added after the first release: databases seeded before it get it from
        # migration 0011 (once; deleted after that, it stays deleted).
        "name": "member_access_policy",
        "description": "Members (the role self-registered accounts get) run their own "
        "virtual machines and app deployments, and nothing else: the privacy policies "
        "keep other users' out of their reach.",
        "rules": [
            {
                "effect": "Allow",
                "resource": ["vms:*", "deployments:*"],
                "action": ["*"],
                "condition": "'member' in user.roles",
            }
        ],
    },
    {
        "name": "self_service_policy",
        "description": "Everyone manages their own API keys.",
        "rules": [
            {
                "effect": "Allow",
                "resource": "api-keys:*",
                "action": ["*"],
                "condition": "resource.owner == user.id",
            }
        ],
    },
    {
        "name": "api_key_privacy_policy",
        "description": "Only administrators see or touch other users' API keys.",
        "rules": [
            {
                "effect": "Deny",
                "resource": "api-keys:*",
                "action": ["*"],
                "condition": "resource.owner != user.id and 'admin' not in user.roles",
            }
        ],
    },
    {
        "name": "vm_privacy_policy",
        "description": "Only administrators see or touch other users' virtual machines.",
        "rules": [
            {
                # An empty owner is a check made before the VM is looked up (the route's);
                # the VM API checks each VM again with its owner.
                "effect": "Deny",
                "resource": "vms:*",
                "action": ["*"],
                "condition": "resource.owner != '' and resource.owner != user.id "
                "and 'admin' not in user.roles",
            }
        ],
    },
    {
        # Added after the first release: databases seeded before it get it from
        # migration 0010 (once; deleted after that, it stays deleted).
        "name": "deployment_privacy_policy",
        "description": "Only administrators see or touch other users' app deployments.",
        "rules": [
            {
                "effect": "Deny",
                "resource": "deployments:*",
                "action": ["*"],
                "condition": "resource.owner != '' and resource.owner != user.id "
                "and 'admin' not in user.roles",
            }
        ],
    },
]
