"""``GET /api/v1/policy`` and ``GET /api/v1/policy/check?from=A&to=B[&path=P&method=M]`` (docs/policy.md):
the policy as resolved on the current model, the recent denials, and one decision explained."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgectl.http_api import BadQuery, HttpApi
from edgectl.policy_denials import DenialLog
from edgectl.policy_view import UnknownName, check, policy_view
from netmodel.state import FabricState

POLICY_PATH = "/api/v1/policy"
CHECK_PATH = "/api/v1/policy/check"


def add_policy_routes(http: HttpApi, denials: DenialLog, trust_domain: str) -> None:
    http.add_route(
        POLICY_PATH,
        lambda state: policy_view(state, trust_domain, [d.as_json() for d in denials.recent()], denials.totals()),
    )

    def check_route(state: FabricState, query: Mapping[str, str]) -> Any:
        missing = [name for name in ("from", "to") if not query.get(name)]
        if missing:
            raise BadQuery(f"give {' and '.join(missing)}: ?from=CALLER&to=SERVICE[&path=/p&method=GET]")
        try:
            return check(
                state,
                trust_domain,
                caller=query["from"],
                callee=query["to"],
                path=query.get("path") or None,
                method=query.get("method") or None,
            )
        except UnknownName as exc:
            raise BadQuery(str(exc)) from None

    http.add_query_route(CHECK_PATH, check_route)
