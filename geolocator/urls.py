from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.static import serve
from drf_spectacular.views import SpectacularAPIView

from similarity.views import locate_page

urlpatterns = [
    path("", locate_page, name="locate-page"),
    path("admin/", admin.site.urls),
    path("api/", include("similarity.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
]

if settings.GEOLOCATOR_SERVE_MEDIA:
    prefix = settings.MEDIA_URL.lstrip("/")
    urlpatterns.append(re_path(rf"^{prefix}(?P<path>.*)$", serve, {"document_root": settings.MEDIA_ROOT}))

handler400 = "similarity.api.errors.bad_request"
