from datetime import timedelta

from django.test import TestCase, TransactionTestCase

from observability.tests.rollup_cases import LateDataChecks, RollupChecks


class HourlyRollupTests(RollupChecks, TestCase):
    url = "/api/requests/hourly/"
    width = timedelta(hours=1)
    relation = "apirequest_hourly"


class HourlyLateDataTests(LateDataChecks, TransactionTestCase):
    url = "/api/requests/hourly/"
    width = timedelta(hours=1)
    relation = "apirequest_hourly"
