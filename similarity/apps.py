from django.apps import AppConfig


class SimilarityConfig(AppConfig):
    name = "similarity"
    verbose_name = "Reference photos"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from similarity.signals import handlers  # noqa: F401  (connects the receivers)
