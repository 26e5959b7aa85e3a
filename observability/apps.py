from django.apps import AppConfig
from django.db.backends.signals import connection_created
from django.db.models.signals import post_migrate, post_save, pre_migrate


class ObservabilityConfig(AppConfig):
    name = "observability"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # checks: registers `check --deploy`'s warning for static files never collected.
        from observability import checks, db, sqlite_functions  # noqa: F401

        connection_created.connect(sqlite_functions.register)
        # Migrations create and drop the continuous aggregates (without importing live code).
        pre_migrate.connect(db.forget_rollup_kind, sender=self)
        post_migrate.connect(db.forget_rollup_kind, sender=self)
        # A key saved (created, revoked) in this process takes effect here at once; other
        # processes follow within APM_API_KEY_CACHE_SECONDS.
        post_save.connect(_remember_key, sender="observability.ApiKey")


def _remember_key(sender, instance, **kwargs) -> None:
    from observability import access

    access.remember(instance)
