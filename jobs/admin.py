from django.contrib import admin

from core.admin import WorkerWrittenAdmin
from jobs import services
from jobs.models import Job


@admin.register(Job)
class JobAdmin(WorkerWrittenAdmin):
    list_display = ("id", "kind", "owner", "status", "progress", "attempts", "created_at", "finished_at")
    list_filter = ("status", "kind", "created_at")
    search_fields = ("owner__username",)
    list_select_related = ("owner",)
    raw_id_fields = ("owner",)
    ordering = ("-created_at", "-id")
    show_full_result_count = False
    actions = ("retry",)

    @admin.action(description="Retry selected failed jobs", permissions=["change"])
    def retry(self, request, queryset):
        retried = services.jobs_retry(job_ids=queryset.values_list("pk", flat=True))
        self.message_user(request, f"Sent {retried} failed job(s) back to the queue.")
