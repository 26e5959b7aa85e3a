"""Django's test runner, plus a closing line that says which database the suite ran on.

`scripts/step6_test.sh` runs the suite once per database and reads the counts this runner
writes to `APM_TEST_RESULTS_FILE` to print one summary for the whole run.
"""

import json
import logging
import os

from django.db import connection
from django.test.runner import DiscoverRunner

from observability import db


class ReportingTestRunner(DiscoverRunner):
    def setup_test_environment(self, **kwargs):
        super().setup_test_environment(**kwargs)
        # The suite sends hundreds of deliberate 4xx requests; their warnings are noise.
        logging.getLogger("django.request").setLevel(logging.ERROR)

    def run_suite(self, suite, **kwargs):
        result = super().run_suite(suite, **kwargs)
        self._result = result
        return result

    def teardown_databases(self, old_config, **kwargs):
        # Ask while the test database still exists: migrations decided what it became.
        self._database = db.describe()
        super().teardown_databases(old_config, **kwargs)

    def run_tests(self, test_labels, **kwargs):
        self._database = connection.vendor  # replaced by the full name at teardown
        failures = super().run_tests(test_labels, **kwargs)
        result = getattr(self, "_result", None)
        if result is not None:
            counts = {
                "database": self._database,
                "run": result.testsRun,
                "failed": len(result.failures) + len(result.errors)
                + len(getattr(result, "unexpectedSuccesses", [])),
                "skipped": len(result.skipped),
            }
            counts["passed"] = counts["run"] - counts["failed"] - counts["skipped"]
            for test, reason in result.skipped:
                print(f"skipped: {test.id()}: {reason}")
            print(
                f"database: {counts['database']}: {counts['passed']} passed, "
                f"{counts['failed']} failed, {counts['skipped']} skipped"
            )
            path = os.environ.get("APM_TEST_RESULTS_FILE")
            if path:
                with open(path, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(counts) + "\n")
        return failures

