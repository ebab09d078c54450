from django.apps import AppConfig


class PortalConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "web.portal"
    label = "portal"
    verbose_name = "Self-service web"
