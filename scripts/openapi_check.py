#!/usr/bin/env python3
"""Validates recorded HTTP exchanges against nixdeck's OpenAPI document with openapi-core.

    .venv/bin/python scripts/openapi_check.py DOCUMENT EXCHANGES

DOCUMENT is the OpenAPI 3.1 document (JSON). Loading it validates the document itself
(openapi-spec-validator). EXCHANGES is a JSON list written by server/tests/openapi.rs, one
object per request the test made to the real server:

    {"method", "path", "query", "template", "headers", "body", "validate_request",
     "status", "content_type", "response"}

Every response must match the document: a documented status, a documented content type, a
body valid against the schema. Requests marked `validate_request` (those the server
accepted) must match the request schemas too. Every documented operation must have been
called. Exits 1 and prints each failure otherwise.

Installed by scripts/setup.sh (openapi-core in .venv/).
"""

import json
import sys
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

METHODS = ("get", "put", "post", "delete", "patch")


def request_of(ex):
    headers = {k: v for k, v in ex["headers"].items() if k.lower() != "cookie"}
    cookies = {}
    if "cookie" in {k.lower() for k in ex["headers"]}:
        raw = next(v for k, v in ex["headers"].items() if k.lower() == "cookie")
        jar = SimpleCookie()
        jar.load(raw)
        cookies = {k: m.value for k, m in jar.items()}
    body = ex["body"].encode() if ex["body"] else None
    content_type = next(
        (v for k, v in ex["headers"].items() if k.lower() == "content-type"), None
    )
    args = {k: v[0] for k, v in parse_qs(ex.get("query") or "").items()}
    return MockRequest(
        "http://127.0.0.1",
        ex["method"].lower(),
        ex["path"],
        args=args,
        headers=headers,
        cookies=cookies,
        data=body,
        content_type=content_type,
    )


def response_of(ex):
    return MockResponse(
        data=ex["response"].encode(),
        status_code=ex["status"],
        content_type=ex["content_type"],
    )


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        document = json.load(f)
    with open(sys.argv[2]) as f:
        exchanges = json.load(f)
    openapi = OpenAPI.from_dict(document)

    failures = []
    called = set()
    for ex in exchanges:
        what = f'{ex["method"]} {ex["path"]} -> {ex["status"]} {ex["content_type"]}'
        called.add((ex["method"].lower(), ex["template"]))
        request = request_of(ex)
        try:
            openapi.validate_response(request, response_of(ex))
        except Exception as e:  # every kind of mismatch is a failure to report
            failures.append(f"{what}: response: {describe(e)}")
        if ex["validate_request"]:
            try:
                openapi.validate_request(request)
            except Exception as e:
                failures.append(f"{what}: request: {describe(e)}")

    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item and (method, path) not in called:
                failures.append(f"{method.upper()} {path}: documented but never called")

    for failure in failures:
        print(failure)
    print(f"openapi-core: {len(exchanges)} exchanges, {len(failures)} failures")
    sys.exit(1 if failures else 0)


def describe(e):
    """The error with its causes: openapi-core wraps the schema errors that say why."""
    parts = [f"{type(e).__name__}: {e}"]
    for sub in getattr(e, "schema_errors", None) or []:
        parts.append(f"  {sub.message} at {list(sub.absolute_path)}")
    cause = e.__cause__
    while cause is not None:
        parts.append(f"  caused by {type(cause).__name__}: {cause}")
        for sub in getattr(cause, "schema_errors", None) or []:
            parts.append(f"    {sub.message} at {list(sub.absolute_path)}")
        cause = cause.__cause__
    return "\n".join(parts)


if __name__ == "__main__":
    main()
