from observability.management.commands._refresh import RefreshCommand


class Command(RefreshCommand):
    help = ("Re-materialize the daily continuous aggregates (counts and latency histograms;"
            " run the hourly refresh first)"
            " over a window. The policy does this every "
            "hour; run it by hand after a bulk load or restore.")
    relation = "apirequest_daily"
