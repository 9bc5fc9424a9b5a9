from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminPasswordChangeForm

from accounts import services
from accounts.forms import GuardedAdminAuthenticationForm
from accounts.models import RefreshTokenFamily, User

# The admin's login page counts failed attempts like the API does (accounts/forms.py).
admin.site.login_form = GuardedAdminAuthenticationForm


class RevokingAdminPasswordChangeForm(AdminPasswordChangeForm):
    """A password set by staff logs the user out everywhere, like a password the user changes themselves."""

    def save(self, commit=True):
        user = super().save(commit=commit)
        if commit:
            services.user_log_out_everywhere(user=user, reason=RefreshTokenFamily.RevokedReason.PASSWORD_CHANGE)
        return user


class RefreshTokenFamilyInline(admin.TabularInline):
    model = RefreshTokenFamily
    fields = ("id", "created_at", "last_rotated_at", "rotations", "expires_at", "revoked_at", "revoked_reason")
    readonly_fields = fields
    ordering = ("-created_at",)
    extra = 0
    max_num = 0
    can_delete = False
    verbose_name_plural = "refresh token families (one per login)"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ("username", "email", "display_name", "is_staff", "is_active", "date_joined", "last_login")
    list_filter = ("is_staff", "is_superuser", "is_active", "date_joined", "last_login")
    search_fields = ("username", "email", "display_name")
    ordering = ("-date_joined",)
    change_password_form = RevokingAdminPasswordChangeForm
    inlines = (RefreshTokenFamilyInline,)
    actions = ("deactivate", "reactivate", "log_out_everywhere")
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        ("Profile", {"fields": ("display_name", "first_name", "last_name", "email")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("username", "email", "password1", "password2")}),)

    @admin.action(description="Deactivate (and log out everywhere)", permissions=["change"])
    def deactivate(self, request, queryset):
        deactivated = 0
        for user in queryset.filter(is_active=True).exclude(pk=request.user.pk):
            services.user_deactivate(user=user, actor=request.user)
            deactivated += 1
        if queryset.filter(pk=request.user.pk).exists():
            self.message_user(request, "You cannot deactivate your own account.", messages.WARNING)
        self.message_user(
            request, f"Deactivated {deactivated} user(s); their tokens no longer work.", messages.SUCCESS
        )

    @admin.action(description="Reactivate", permissions=["change"])
    def reactivate(self, request, queryset):
        reactivated = 0
        for user in queryset.filter(is_active=False):
            services.user_reactivate(user=user)
            reactivated += 1
        self.message_user(request, f"Reactivated {reactivated} user(s).", messages.SUCCESS)

    @admin.action(description="Log out everywhere", permissions=["change"])
    def log_out_everywhere(self, request, queryset):
        users = list(queryset)
        for user in users:
            services.user_log_out_everywhere(user=user)
        self.message_user(request, f"Logged out {len(users)} user(s) everywhere.", messages.SUCCESS)

    def save_model(self, request, obj, form, change):
        # Unticking "active" in the form must revoke tokens exactly as the action does.
        deactivating = change and "is_active" in form.changed_data and not obj.is_active
        super().save_model(request, obj, form, change)
        if deactivating:
            services.user_log_out_everywhere(user=obj, reason=RefreshTokenFamily.RevokedReason.DEACTIVATED)


@admin.register(RefreshTokenFamily)
class RefreshTokenFamilyAdmin(admin.ModelAdmin):
    """Read-only: families are created by logins and ended by logouts, rotation reuse or revocation."""

    list_display = ("user", "created_at", "last_rotated_at", "rotations", "expires_at", "revoked_at", "revoked_reason")
    list_filter = ("revoked_reason", "created_at")
    search_fields = ("user__username", "user__email")
    list_select_related = ("user",)
    raw_id_fields = ("user",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
