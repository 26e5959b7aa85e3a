import re
from io import StringIO

from django.core.management import call_command
from django.core.management.base import OutputWrapper
from django.test import SimpleTestCase, TestCase

from observability.progress import Progress


class Terminal(StringIO):
    def isatty(self):
        return True


class ProgressOnATerminalTests(SimpleTestCase):
    def test_the_bar_redraws_in_place_and_ends_with_one_newline(self):
        out = Terminal()
        with Progress(total=1000, out=OutputWrapper(out)) as progress:
            for done in range(100, 1001, 100):
                progress.update(done)
        text = out.getvalue()
        self.assertEqual(text.count("\n"), 1, repr(text))
        self.assertTrue(text.endswith("\n"))
        self.assertGreaterEqual(text.count("\r"), 2, repr(text))  # at least the first and the final draw
        self.assertRegex(text.rsplit("\r", 1)[-1], r"100%.*1\.00k/1\.00k")


class ProgressOffATerminalTests(SimpleTestCase):
    def lines(self, total, steps):
        out = StringIO()
        with Progress(total=total, out=OutputWrapper(out)) as progress:
            for done in steps:
                progress.update(done)
        return out.getvalue().splitlines()

    def test_one_line_per_ten_percent_however_small_the_steps(self):
        lines = self.lines(1000, range(1, 1001))
        self.assertEqual([line.split()[0] for line in lines],
                         ["10.0%", "20.0%", "30.0%", "40.0%", "50.0%", "60.0%", "70.0%", "80.0%", "90.0%", "100.0%"])
        self.assertIn("1,000/1,000 events", lines[-1])
        self.assertNotIn("\r", "".join(lines))

    def test_a_step_over_several_tenths_prints_one_line(self):
        self.assertEqual([line.split()[0] for line in self.lines(1000, [250, 500, 1000])],
                         ["25.0%", "50.0%", "100.0%"])

    def test_an_empty_job_prints_its_end(self):
        self.assertEqual([line.split()[0] for line in self.lines(0, [0])], ["100.0%"])


class SeedRequestsProgressTests(TestCase):
    def seed(self, out, events):
        call_command("seed_requests", "--events", str(events), "--days", "1", "--end", "2026-03-01T00:00:00Z",
                     "--no-refresh", stdout=out)
        return out.getvalue()

    def test_off_a_terminal_seed_requests_prints_its_plan_a_line_per_ten_percent_then_its_summary(self):
        lines = self.seed(StringIO(), 2000).splitlines()
        self.assertEqual(len(lines), 12, lines)
        self.assertTrue(lines[0].startswith("Seeding 2,000 events over 1 days"), lines[0])
        self.assertEqual([line.split()[0] for line in lines[1:11]], [f"{p}.0%" for p in range(10, 101, 10)])
        self.assertTrue(lines[-1].startswith("Seeded 2,000 events over 1 days"), lines[-1])

    def test_on_a_terminal_seed_requests_redraws_one_line_then_prints_its_summary(self):
        text = self.seed(Terminal(), 2000)
        plan, bar, summary = text.rstrip("\n").split("\n")
        self.assertTrue(plan.startswith("Seeding 2,000 events"), plan)
        self.assertIn("\r", bar)
        self.assertRegex(bar.rsplit("\r", 1)[-1], r"100%.*2\.00k/2\.00k")
        self.assertTrue(summary.startswith("Seeded 2,000 events"), summary)
        # The bar's redraws stay on one line (its first draw starts with \r, after the plan's newline).
        self.assertIsNone(re.search(r"\n\r|\r\n", text.split("\n", 1)[1].removeprefix("\r")))
