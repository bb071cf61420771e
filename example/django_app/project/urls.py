"""URLs of the example project: a view that enqueues in the request's transaction."""

from django.urls import path
from shop import views

urlpatterns = [
    path("orders/<int:total>", views.place_order),
    path("results/<str:result_id>", views.result),
]
