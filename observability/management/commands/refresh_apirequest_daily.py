from observability.management.commands._refresh import RefreshCommand


class Command(RefreshCommand):
    help = ("Re-materialize the daily continuous aggregate over a window. The policy does this every "
            "hour; run it by hand after a bulk load or restore.")
    relation = "apirequest_daily"
