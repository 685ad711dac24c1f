from django.urls import include, path
from rest_framework.routers import DefaultRouter

from similarity.api import batches, views

router = DefaultRouter()
router.register("photos", views.ReferencePhotoViewSet, basename="photo")

urlpatterns = [
    path("similar/", views.SimilarView.as_view(), name="similar"),
    path("similar/text/", views.TextSearchView.as_view(), name="similar-text"),
    path("locate/", views.LocateView.as_view(), name="locate"),
    path("candidates/", views.CandidateView.as_view(), name="candidates"),
    path("batches/", batches.BatchListView.as_view(), name="batches"),
    path("batches/<uuid:batch_id>/", batches.BatchView.as_view(), name="batch"),
    path("stats/", views.StatsView.as_view(), name="stats"),
    path("coverage/", views.CoverageView.as_view(), name="coverage"),
    path("coverage/cell/", views.CoverageCellView.as_view(), name="coverage-cell"),
    path("", include(router.urls)),
]
