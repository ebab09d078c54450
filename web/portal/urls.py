from django.urls import path

from . import api, blocked, contacts, devices, history, operators, privacy, views

app_name = "portal"

urlpatterns = [
    path("", views.home, name="home"),
    path("signup/", views.signup, name="signup"),
    path("verify/<str:token>/", views.verify_email, name="verify_email"),
    path("verify-again/", views.resend_verification, name="resend_verification"),
    path("email/", views.change_email, name="change_email"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.logout, name="logout"),
    path("password/", views.password_change, name="password_change"),
    path("password/done/", views.password_change_done, name="password_change_done"),
    path("password/reset/", views.PasswordResetView.as_view(), name="password_reset"),
    path("password/reset/sent/", views.password_reset_done, name="password_reset_done"),
    path("password/reset/<uidb64>/<token>/", views.password_reset_confirm, name="password_reset_confirm"),
    path("password/reset/done/", views.password_reset_complete, name="password_reset_complete"),
    path("device/", devices.device, name="device"),
    path("device/release/", devices.release, name="release_device"),
    path("contacts/", contacts.contacts, name="contacts"),
    path("contacts/<int:pk>/remove/", contacts.remove_contact, name="remove_contact"),
    path("contacts/only/", contacts.contacts_only, name="contacts_only"),
    path("blocked/", blocked.blocked, name="blocked"),
    path("blocked/<int:pk>/remove/", blocked.unblock, name="unblock"),
    path("messages/", history.messages_view, name="messages"),
    path("usage/", history.usage, name="usage"),
    path("privacy/", privacy.privacy, name="privacy"),
    path("privacy/my-data.json", privacy.export, name="export"),
    path("dashboard/", operators.dashboard_view, name="dashboard"),
    path("api/device-lookup", api.device_lookup, name="device_lookup"),
]
