import json

from django.core.management.base import BaseCommand

from observability import db, retention, storage
from observability.constants import TIER_SETTINGS


def _size(value) -> str:
    if value is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)


def _when(value) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else value.isoformat(timespec="seconds").replace("+00:00", "Z")


def _iso(value) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _compressed(row) -> str:
    if not row["compressed_chunks"]:
        return "-"
    return f"{_size(row['compressed_bytes'])} ({row['compressed_chunks']}/{row['chunks']} chunks)"


class Command(BaseCommand):
    help = ("Rows, size, compression, time span and retention of the raw events and each rollup; "
            "run it when sizing disks or after changing retention (--json for scripts).")

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="one JSON document instead of a table")

    def handle(self, *args, **options):
        rows = storage.relations()
        settings = {name: getattr(retention.settings, name) for name in
                    (*TIER_SETTINGS.values(), "APM_COMPRESS_AFTER_DAYS")}
        if options["json"]:
            document = {"database": db.describe(), "settings": settings,
                        "relations": [{**row, "oldest": _iso(row["oldest"]), "newest": _iso(row["newest"])}
                                      for row in rows]}
            self.stdout.write(json.dumps(document, indent=2))
            return
        header = ("relation", "kind", "tier", "rows", "size", "compressed", "ratio", "oldest", "newest",
                  "retention", "columnstore")
        table = [header] + [(
            r["relation"], r["kind"], r["tier"], f"{r['rows']:,}", _size(r["total_bytes"]),
            _compressed(r),
            "-" if r["compression_ratio"] is None else f"{r['compression_ratio']:.1f}x",
            _when(r["oldest"]), _when(r["newest"]), r["retention"], r["columnstore"],
        ) for r in rows]
        widths = [max(len(str(line[i])) for line in table) for i in range(len(header))]
        for line in table:
            cells = (str(cell).ljust(width) for cell, width in zip(line, widths, strict=True))
            self.stdout.write("  ".join(cells).rstrip())
        self.stdout.write(f"{len(rows)} relations on {db.describe()}; settings: "
                          + ", ".join(f"{k}={v}" for k, v in settings.items()))
