from django.apps import AppConfig


class DeliveryConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "web.delivery"
    label = "delivery"
    verbose_name = "Message delivery"
