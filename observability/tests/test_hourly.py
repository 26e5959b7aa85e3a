from datetime import timedelta

from observability.tests.rollup_cases import LateDataChecks, RollupChecks
from observability.tests.utils import ApiTestCase, ApiTransactionTestCase


class HourlyRollupTests(RollupChecks, ApiTestCase):
    url = "/api/requests/hourly/"
    width = timedelta(hours=1)
    relation = "apirequest_hourly"


class HourlyLateDataTests(LateDataChecks, ApiTransactionTestCase):
    url = "/api/requests/hourly/"
    width = timedelta(hours=1)
    relation = "apirequest_hourly"
