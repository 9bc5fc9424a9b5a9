"""The browser pages: session login and logout, the rooms list, a room."""

from django.contrib.auth import views as auth_views
from django.urls import path

from accounts.forms import GuardedAuthenticationForm
from chat import views

app_name = "chat"

urlpatterns = [
    path("", views.rooms, name="rooms"),
    path("chat/<room_slug:slug>/", views.room, name="room"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True, authentication_form=GuardedAuthenticationForm),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
]
