from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "Space Beaver"
admin.site.site_title = "Space Beaver admin"
admin.site.index_template = "admin/spacebeaver_index.html"  # links the operator dashboard (web/portal)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("web.portal.urls")),
]
