from django.apps import AppConfig


class SimilarityConfig(AppConfig):
    name = "similarity"
    verbose_name = "Reference photos"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.conf import settings
        from django.db.models.signals import post_migrate

        from similarity import conf
        from similarity.memory import set_mmap_threshold, set_trim_threshold

        conf.configure()  # the runtime and index packages read SIMILARITY_* through it

        set_mmap_threshold(settings.SIMILARITY_MALLOC_MMAP_THRESHOLD)  # every process: web, worker, commands
        set_trim_threshold(settings.SIMILARITY_MALLOC_TRIM_THRESHOLD)
        if any(database["ENGINE"] == "django.db.backends.postgresql" for database in settings.DATABASES.values()):
            from similarity.database import bound_waits

            bound_waits(settings.DATABASE_CONNECT_TIMEOUT, settings.DATABASE_STATEMENT_TIMEOUT)

        from similarity import checks  # noqa: F401  (registers the system checks)
        from similarity.signals import handlers  # connects the model receivers

        post_migrate.connect(handlers.ensure_maintenance_schedule, sender=self, dispatch_uid="similarity_schedule")
