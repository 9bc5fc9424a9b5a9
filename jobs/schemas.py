from datetime import datetime
from typing import Annotated, Literal

from ninja import Field, Header, Schema

from core.pagination import CursorParams
from core.schemas import StrictSchema
from jobs.models import JobStatus

MAX_IDEMPOTENCY_KEY_LENGTH = 255
# The Idempotency-Key request header (optional).
IdempotencyKey = Annotated[str | None, Header(None, alias="Idempotency-Key", max_length=MAX_IDEMPOTENCY_KEY_LENGTH)]


class ExportIn(StrictSchema):
    format: Literal["csv", "jsonl"] = "csv"
    # `mine`: every post of the caller, drafts included; `all`: every post (staff only).
    scope: Literal["mine", "all"] = "mine"


class JobListParams(CursorParams):
    status: JobStatus | None = Field(None, description="Only the jobs in this status.")


class JobOut(Schema):
    id: int
    kind: str
    status: JobStatus
    progress: int = Field(ge=0, le=100)
    created_at: datetime
    finished_at: datetime | None
    error: str | None
    download_url: str | None
