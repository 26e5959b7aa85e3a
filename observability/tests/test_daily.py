from datetime import timedelta

from django.test import TestCase, TransactionTestCase

from observability.tests.rollup_cases import LateDataChecks, RollupChecks


class DailyRollupTests(RollupChecks, TestCase):
    url = "/api/requests/daily/"
    width = timedelta(days=1)
    relation = "apirequest_daily"
    span = timedelta(days=4)


class DailyLateDataTests(LateDataChecks, TransactionTestCase):
    url = "/api/requests/daily/"
    width = timedelta(days=1)
    relation = "apirequest_daily"
