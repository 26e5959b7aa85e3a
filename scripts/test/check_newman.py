"""Check a newman run of the collection converted from the OpenAPI schema (test_schemathesis.sh).

Every request in the collection must have been sent and answered, never with a 5xx, and with a
status the schema documents for that operation. Writes a one-line summary next to the report.

    python scripts/test/check_newman.py openapi.json newman.json headers
"""

import json
import re
import sys
from pathlib import Path


def operations(schema: dict) -> list[tuple[re.Pattern, str, set[str]]]:
    """(path regex, method, documented statuses) for every operation of the schema."""
    result = []
    for path, methods in schema["paths"].items():
        pattern = re.compile("^" + re.sub(r"\{[^/]+\}", "[^/]+", path.rstrip("/")) + "/?$")
        for method, operation in methods.items():
            result.append((pattern, method.upper(), set(operation["responses"])))
    return result


def main(schema_path: str, report_path: str, headers_path: str) -> int:
    known = operations(json.loads(Path(schema_path).read_text()))
    run = json.loads(Path(report_path).read_text())["run"]
    problems = []
    sent = 0
    for execution in run["executions"]:
        name = execution["item"]["name"]
        request = execution.get("request")
        response = execution.get("response")
        if request is None or response is None:
            problems.append(f"{name}: no response ({execution.get('requestError')})")
            continue
        sent += 1
        method = request["method"]
        path = "/" + "/".join(request["url"]["path"])
        code = response["code"]
        matches = [statuses for pattern, m, statuses in known if m == method and pattern.match(path)]
        if not matches:
            problems.append(f"{name}: {method} {path} is not an operation of the schema")
        elif code >= 500 or str(code) not in matches[0] and "default" not in matches[0]:
            problems.append(f"{name}: {method} {path} answered {code}, documented: {sorted(matches[0])}")
    failures = run.get("failures", [])
    for failure in failures:
        problems.append(f"newman: {failure.get('error', {}).get('message')}")
    summary = f"{sent} requests converted and sent by newman, {len(problems)} problems"
    Path(report_path).with_suffix(".summary").write_text(summary)
    print(summary)
    for problem in problems:
        print("  " + problem)
    return 1 if problems or not sent else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
