"""Schemathesis hooks for the contract test (loaded by `st run` through SCHEMATHESIS_HOOKS).

The API refuses with 422 not only what breaks the schema but also what breaks a rule between
objects (a VM on a network that does not exist, overlapping CIDRs, a duplicate IP): JSON Schema
cannot express those, so the contract test lets positive data be refused with 422. This check
keeps that allowance honest: a schema-valid request must never be refused by the API's own
request validation (pydantic / FastAPI), which is what a constraint missing from the published
schema looks like. The test app marks those answers with the REFUSED_BY header.
"""

from __future__ import annotations

from typing import Any

import schemathesis

REFUSED_BY = "x-test-refused-by"
REQUEST_VALIDATION = "request-validation"


@schemathesis.check
def schema_valid_request_passes_request_validation(ctx: Any, response: Any, case: Any) -> None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return
    if REQUEST_VALIDATION in response.headers.get(REFUSED_BY, []):
        raise AssertionError(
            "a schema-valid request failed the API's request validation: the OpenAPI "
            f"document lacks a constraint the API enforces ({response.text[:300]})")
