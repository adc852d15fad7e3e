"""Keys and credits across tenants and API processes, against two real `avatar serve` processes
sharing one PostgreSQL and one Redis (no worker needed): a revoked key stops at once in every
process, and only an operator key (made on the server) moves another tenant's credits."""
from __future__ import annotations

import httpx
import pytest

from service_procs import api_server, run_avatar
from stack import Stack, service_env


@pytest.fixture(scope="module")
def stacks(postgres, s3, redis_url, weights_dir, tmp_path_factory):
    """Two API processes over the same database and Redis, as behind a load balancer."""
    cwd = tmp_path_factory.mktemp("keys")
    env = service_env(postgres, s3, redis_url, weights_dir, RATE_LIMIT_PER_MINUTE="0")
    with api_server(env, cwd) as first, api_server(env, cwd) as second:
        a, b = Stack(first, env, cwd), Stack(second, env, cwd)
        a.keys = b.keys = {"admin": a.key("acme", "--admin"), "operator": a.key("ops", "--operator"),
                           "other_admin": a.key("other", "--admin")}
        yield a, b


def fresh_key(stack: Stack) -> tuple[str, str]:
    """A new client key of tenant acme, made by acme's admin key: (id, secret)."""
    made = stack.client("admin").post("/api/keys", json={"tenant": "acme"})
    assert made.status_code == 201, made.text
    return made.json()["id"], made.json()["key"]


def works(base: str, key: str) -> int:
    return httpx.get(f"{base}/api/credits", headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code


def test_a_key_revoked_through_one_api_process_stops_at_once_in_the_other(stacks):
    a, b = stacks
    key_id, key = fresh_key(a)
    assert works(a.base, key) == 200 and works(b.base, key) == 200  # both processes now remember it
    assert a.client("admin").delete(f"/api/keys/{key_id}").status_code == 204
    assert works(b.base, key) == 401  # at once: no wait for the other process's memory to lapse
    assert works(a.base, key) == 401


def test_a_key_revoked_on_the_cli_stops_at_once_in_every_api_process(stacks):
    a, b = stacks
    key_id, key = fresh_key(a)
    assert works(a.base, key) == 200 and works(b.base, key) == 200
    revoked = run_avatar(a.env, a.cwd, "keys", "revoke", key_id)
    assert revoked.returncode == 0 and "warning" not in revoked.stderr, revoked.stderr
    assert (works(a.base, key), works(b.base, key)) == (401, 401)


def test_only_an_operator_key_grants_credits_and_any_tenant_can_be_granted(stacks):
    a, b = stacks
    grant = {"tenant": "acme", "amount": 5, "note": "first month"}
    for role in ("admin", "other_admin"):  # a tenant's admin key, for its own tenant or another
        refused = a.client(role).post("/admin/credits", json=grant)
        assert refused.status_code == 403 and "operator" in refused.json()["error"]["message"], refused.text
        assert a.client(role).get("/admin/credits/acme").status_code == 403
    assert a.client().post("/admin/credits", json=grant).status_code == 401
    assert a.client("admin").get("/api/credits").json()["metered"] is False  # nothing was granted
    op = a.client("operator")
    made = op.post("/admin/credits", json=grant)
    assert made.status_code == 201, made.text
    assert (made.json()["tenant"], made.json()["balance"], made.json()["metered"]) == ("acme", 5, True)
    assert op.post("/admin/credits", json={**grant, "amount": 0}).status_code == 422
    assert op.post("/admin/credits", json={**grant, "tenant": "Not A Tenant"}).status_code == 422
    seen = b.client("admin").get("/api/credits").json()  # the tenant sees it, through any process
    assert (seen["balance"], [(m["kind"], m["amount"], m["note"]) for m in seen["movements"]]) == \
        (5, [("grant", 5, "first month")])
    assert op.get("/admin/credits/acme").json()["balance"] == 5
    assert op.get("/admin/credits/other").json()["metered"] is False
    shown = run_avatar(a.env, a.cwd, "credits", "show", "--tenant", "acme")
    assert "balance 5" in shown.stdout, shown.stderr  # the CLI reads the same ledger


def test_only_the_cli_makes_operator_keys(stacks):
    a, _ = stacks
    r = a.client("admin").post("/api/keys", json={"tenant": "acme", "operator": True})
    assert r.status_code == 422  # not a field the API takes
    listed = run_avatar(a.env, a.cwd, "keys", "list").stdout
    assert any(" ops " in line and "operator" in line for line in listed.splitlines()), listed
