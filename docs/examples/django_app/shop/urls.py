from django.urls import path

from shop import views

# Route templates are what the backend stores as the endpoint: one row per route, not per id.
urlpatterns = [
    path("health/", views.health),
    path("orders/", views.orders),
    path("orders/<int:order_id>/", views.order),
    path("orders/<int:order_id>/pay/", views.pay),
    path("reports/daily/", views.daily_report),
]
