"""Policy evaluation (pure): the default policies as a role matrix, Deny over Allow,
and rule checking that names the rule at fault."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from control_center.policies import (
    DEFAULT_POLICIES,
    CompiledPolicy,
    PolicyEngine,
    compile_policy,
    compile_rules,
)
from orchestrator.errors import InvalidInput
from orchestrator.http.access import Principal

# Touches no database: runs in the SQLite pass only (tests/conftest.py).
pytestmark = pytest.mark.backend_independent


def principal(*roles: str, user_id: str = "u-1") -> Principal:
    return Principal(user_id=user_id, username="someone", roles=roles, via="jwt")


DEFAULTS = PolicyEngine(
    compile_policy(str(i), p["name"], p["rules"]) for i, p in enumerate(DEFAULT_POLICIES)
)


@pytest.mark.parametrize(
    ("roles", "action", "resource", "allowed"),
    [
        (("admin",), "delete", "users:u-9", True),
        (("admin",), "update", "policies:p-1", True),
        (("admin",), "execute", "rollback:*", True),
        (("operator",), "read", "users:u-9", True),
        (("operator",), "list", "policies:*", True),
        (("operator",), "list", "audit:logs", True),
        (("operator",), "create", "users:*", False),
        (("operator",), "update", "users:u-1", False),
        (("operator",), "update", "policies:p-1", False),
        (("operator",), "create", "servers:web-01", True),
        (("operator",), "execute", "batches:*", True),
        (("operator",), "execute", "rollback:*", True),
        (("operator",), "create", "checkpoints:*", True),
        (("operator",), "cancel", "workflows:w-1", True),
        (("operator",), "create", "host:users", False),
        (("viewer",), "read", "servers:web-01", True),
        (("viewer",), "list", "users:*", True),
        (("viewer",), "create", "servers:web-01", False),
        (("viewer",), "execute", "rollback:*", False),
        ((), "read", "servers:web-01", False),
        (("admin", "operator"), "create", "users:*", True),
    ],
)
def test_the_default_policies(roles, action, resource, allowed):
    decision = DEFAULTS.evaluate(principal(*roles), action, resource)
    assert decision.allowed is allowed, decision.reason


@pytest.mark.parametrize(
    ("action", "resource", "owner", "allowed"),
    [
        ("create", "vms:*", "", True),
        ("start", "vms:v-1", "u-1", True),
        ("read", "vms:v-2", "u-2", False),
        ("create", "deployments:*", "", True),
        ("delete", "deployments:d-1", "u-1", True),
        ("read", "deployments:d-2", "u-2", False),
        ("update", "deployments:d-2", "u-2", False),
        ("list", "users:*", "", False),
        ("read", "users:u-9", "", False),
        ("list", "audit:logs", "", False),
        ("read", "workflows:w-1", "", False),
        ("read", "events:*", "", False),
        ("read", "logs:*", "", False),
        ("create", "servers:web-01", "", False),
    ],
)
def test_a_member_runs_its_own_vms_and_deployments_and_reads_nothing_else(
    action, resource, owner, allowed
):
    decision = DEFAULTS.evaluate(principal("member"), action, resource, {"owner": owner})
    assert decision.allowed is allowed, decision.reason


@pytest.mark.parametrize("roles", [(), ("viewer",), ("operator",), ("member",), ("admin",)])
def test_everyone_manages_their_own_api_keys(roles):
    for action in ("create", "list", "delete"):
        decision = DEFAULTS.evaluate(principal(*roles), action, "api-keys:k-1", {"owner": "u-1"})
        assert decision.allowed, decision.reason


@pytest.mark.parametrize(
    ("roles", "allowed"), [(("viewer",), False), (("operator",), False), (("admin",), True)]
)
def test_only_admins_touch_other_users_api_keys(roles, allowed):
    decision = DEFAULTS.evaluate(principal(*roles), "list", "api-keys:*", {"owner": "u-2"})
    assert decision.allowed is allowed
    if not allowed:
        assert decision.reason == "denied by policy 'api_key_privacy_policy' rule 0"


def test_an_explicit_deny_wins_over_any_allow():
    deny = CompiledPolicy(
        "d",
        "no-deletes-at-night",
        compile_rules(
            [
                {
                    "effect": "Deny",
                    "resource": "*",
                    "action": ["delete"],
                    "condition": "time.hour < 6",
                }
            ]
        ),
    )
    engine = PolicyEngine([*DEFAULTS.policies, deny])
    night = {"now": datetime(2025, 1, 1, 3, tzinfo=UTC)}
    day = {"now": datetime(2025, 1, 1, 12, tzinfo=UTC)}
    admin = principal("admin")
    assert not engine.evaluate(admin, "delete", "servers:x", night).allowed
    assert engine.evaluate(admin, "delete", "servers:x", day).allowed
    assert engine.evaluate(admin, "create", "servers:x", night).allowed


def test_globs_match_resources_and_actions():
    engine = PolicyEngine(
        [
            compile_policy(
                "g",
                "globs",
                [{"effect": "Allow", "resource": ["servers:web-*"], "action": ["re*"]}],
            )
        ]
    )
    someone = principal()
    assert engine.evaluate(someone, "read", "servers:web-01").allowed
    assert engine.evaluate(someone, "restart", "servers:web-02").allowed
    assert not engine.evaluate(someone, "read", "servers:db-01").allowed
    assert not engine.evaluate(someone, "delete", "servers:web-01").allowed


def test_the_seed_example_rule_compiles_and_reads_the_primary_role():
    engine = PolicyEngine(
        [
            compile_policy(
                "s",
                "new_policy",
                [
                    {
                        "effect": "Allow",
                        "resource": "servers:*",
                        "action": ["create", "read"],
                        "condition": "user.role == 'admin'",
                    }
                ],
            )
        ]
    )
    assert engine.evaluate(principal("admin", "operator"), "create", "servers:a").allowed
    assert not engine.evaluate(principal("operator", "admin"), "create", "servers:a").allowed


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            [{"effect": "Allow", "resource": "*", "condition": "os.system('x')"}],
            "rules[0].condition: a function call is not allowed",
        ),
        (
            [{"effect": "Allow", "resource": "*"}, {"effect": "Maybe", "resource": "*"}],
            "rules[1].effect: must be Allow or Deny",
        ),
        ([{"effect": "Allow", "resource": []}], "rules[0].resource:"),
        ([{"effect": "Allow", "resource": "*", "action": [1]}], "rules[0].action:"),
        (
            [{"effect": "Allow", "resource": "*", "subject": "x"}],
            "rules[0]: unknown field(s) subject",
        ),
        (["Allow everything"], "rules[0]: must be an object"),
        (
            [{"effect": "Allow", "resource": "*", "condition": "user.role =="}],
            "rules[0].condition: is not a valid expression",
        ),
    ],
)
def test_invalid_rules_are_refused_naming_the_rule(rules, message):
    with pytest.raises(InvalidInput) as raised:
        compile_rules(rules)
    assert raised.value.message.startswith(message), raised.value.message


def test_the_default_policies_compile():
    for policy in DEFAULT_POLICIES:
        assert compile_rules(policy["rules"])
