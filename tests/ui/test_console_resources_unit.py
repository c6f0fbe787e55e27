"""The resource pages' templates (issue 17): everything the API answers is shown as
text, buttons follow what the page was told is allowed, links only to http(s)."""

from __future__ import annotations

import pytest

from orchestrator.ui.resources import epoch, human_bytes
from orchestrator.ui.routes import templates

pytestmark = pytest.mark.backend_independent

HOSTILE = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
COMMON = {"csrf": "t0k3n", "csrf_field": "_csrf"}


def vm(**extra: object) -> dict[str, object]:
    return {
        "id": "v1",
        "name": f"vm {HOSTILE}",
        "cpu": 1,
        "memory": 64,
        "disk": 1,
        "os": HOSTILE,
        "status": "running",
        "owner": "u1",
        "created_at": "2026-12-07T10:00:00Z",
        "ip": None,
        "ports": {},
        "workflow_id": "w1",
        "error": HOSTILE,
        **extra,
    }


def test_vm_fields_are_escaped_and_buttons_are_the_allowed_ones():
    actions = [
        {"name": "stop", "label": "Stop", "confirm": f"Stop? {HOSTILE}", "enabled": True},
        {"name": "start", "label": "Start", "confirm": None, "enabled": False},
    ]
    html = templates.get_template("vm_panel.html").render(vm=vm(), actions=actions, **COMMON)
    assert "<script>" not in html
    assert html.count(ESCAPED) == 3  # os, error, the confirmation
    assert 'action="/ui/vms/v1/stop" class="confirm"' in html
    assert 'id="vm-start" disabled' in html
    assert 'name="_csrf" value="t0k3n"' in html
    assert "/ui/vms/v1/delete" not in html  # not offered
    table = templates.get_template("vms_table.html").render(
        vms=[vm()], total=1, page=1, pages=1, previous=None, next=None
    )
    assert "<script>" not in table and table.count(ESCAPED) == 2  # name, os


def test_deployment_fields_and_urls():
    deployment = {
        "id": "d1",
        "app_name": HOSTILE,
        "image": HOSTILE,
        "port": 8080,
        "replicas": 2,
        "url": "javascript:alert(1)",
        "urls": ["javascript:alert(1)", "http://shop.example.com"],
        "error_message": HOSTILE,
        "workflow_id": "w1",
        "created_at": "2026-12-07T10:00:00Z",
    }
    state = {
        "status": "running",
        "health": "healthy",
        "replicas": {"desired": 2, "ready": 1, "available": 2},
        "uptime": "12s",
        "restart_count": 0,
    }
    instances = [
        {
            "name": HOSTILE,
            "healthy": True,
            "running": True,
            "host_port": 40000,
            "metrics": {
                "cpu_percent": 1.5,
                "memory_bytes": 3 * 1024 * 1024,
                "memory_percent": 0.1,
                "network": {"rx_bytes": 100, "tx_bytes": 2048},
                "restarts": 0,
            },
        }
    ]
    html = templates.get_template("deployment_panel.html").render(
        deployment=deployment,
        state=state,
        instances=instances,
        total=None,
        metrics_error=None,
        can_update=False,
        can_delete=False,
        **COMMON,
    )
    assert "<script>" not in html
    assert html.count(ESCAPED) == 4  # image, error, the replica (its row and its name)
    assert 'href="javascript:' not in html and "javascript:alert(1)" in html
    assert '<a href="http://shop.example.com" rel="noreferrer">' in html
    assert "1 ready of 2 desired (2 running)" in html
    assert "3.0 MiB" in html and "100 B / 2.0 KiB" in html
    assert "<form" not in html  # neither update nor delete allowed


def test_host_pages_escape_what_the_host_reports():
    html = templates.get_template("host.html").render(
        configured=True,
        instance="host",
        instances=["host"],
        errors={},
        summary={
            "hostname": HOSTILE,
            "os": "Debian",
            "kernel": "6.1",
            "architecture": "x86_64",
            "uptime": 3600,
            "boot_time": 0,
            "load_average": [0.5, 0.25, 0.125],
        },
        memory={"used": 2 * 1024**3, "total": 8 * 1024**3, "swap": {"total": 0, "used": 0}},
        interfaces=[{"name": HOSTILE, "type": "loopback", "state": "up", "addresses": []}],
        disks=[{"name": "sda", "path": "/dev/sda", "size": 10 * 1024**3, "partitions": []}],
        users=[
            {"username": HOSTILE, "uid": "1000", "gid": "1000", "home": "/", "shell": "/bin/sh"}
        ],
        **COMMON,
    )
    assert "<script>" not in html and html.count(ESCAPED) == 4  # title, hostname, iface, user
    assert "1970-01-01 00:00:00 UTC" in html and "0.5 · 0.25 · 0.12" in html
    assert "2.0 GiB used of 8.0 GiB" in html and "10.0 GiB" in html
    logs = templates.get_template("host_logs.html").render(
        instance="host",
        logs=[
            {
                "timestamp": "2026-12-07T10:00:00",
                "priority": "info",
                "unit": "x",
                "message": HOSTILE,
            }
        ],
        service="",
        priority="",
        total=1,
        page=1,
        pages=1,
        previous=None,
        next=None,
        **COMMON,
    )
    assert "<script>" not in logs and ESCAPED in logs


def test_byte_and_time_filters():
    assert human_bytes(None) == "" and human_bytes(True) == ""
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(5 * 1024**4) == "5.0 TiB"
    assert human_bytes(3 * 1024**5) == "3072.0 TiB"
    assert epoch("soon") == "" and epoch(86400) == "1970-01-02 00:00:00 UTC"
