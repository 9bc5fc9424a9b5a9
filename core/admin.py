"""Admin bases the apps share."""

from django.contrib import admin


class WorkerWrittenAdmin(admin.ModelAdmin):
    """Rows the Celery workers write (jobs, deliveries): the console watches them and retries failed ones, and
    never edits or adds them by hand."""

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request):
        return False
