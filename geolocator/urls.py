from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView

from similarity.web.views import locate_page, media_file

urlpatterns = [
    path("", locate_page, name="locate-page"),
    path("admin/", admin.site.urls),
    path("api/", include("similarity.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
]

if settings.GEOLOCATOR_SERVE_MEDIA:
    prefix = settings.MEDIA_URL.lstrip("/")
    urlpatterns.append(re_path(rf"^{prefix}(?P<path>.*)$", media_file, name="media"))

handler400 = "similarity.api.errors.bad_request"
handler500 = "similarity.api.errors.server_error"
