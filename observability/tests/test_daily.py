from datetime import timedelta

from observability.tests.rollup_cases import LateDataChecks, RollupChecks
from observability.tests.utils import ApiTestCase, ApiTransactionTestCase


class DailyRollupTests(RollupChecks, ApiTestCase):
    url = "/api/requests/daily/"
    width = timedelta(days=1)
    relation = "apirequest_daily"
    span = timedelta(days=4)


class DailyLateDataTests(LateDataChecks, ApiTransactionTestCase):
    url = "/api/requests/daily/"
    width = timedelta(days=1)
    relation = "apirequest_daily"
