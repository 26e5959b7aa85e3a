from observability.management.commands._refresh import RefreshCommand


class Command(RefreshCommand):
    help = ("Re-materialize the hourly continuous aggregates (counts and latency histograms)"
            " over a window. The policy does this every "
            "5 minutes; run it by hand after a bulk load or restore.")
    relation = "apirequest_hourly"
