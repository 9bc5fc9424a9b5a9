"""Jobs endpoints: starting an export, one's jobs (a list, new in v2), one job, its file. Both versions answer alike
(a job's download URL names the version it was asked through); v2 adds the list.

Rate limits, and the 429/503 answers they add, are applied to every operation in config/api.py.
"""

from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.core.files.storage import default_storage
from django.http import HttpResponse, StreamingHttpResponse
from ninja import Query, Router, Status

from accounts.auth import jwt_auth
from core.errors import Conflict, NotFound
from core.pagination import CursorPage
from core.params import ObjectId
from core.paths import api_url, version_of
from core.schemas import INVALID, NOT_FOUND, UNAUTHENTICATED, ErrorOut
from jobs import selectors, services
from jobs.models import Job
from jobs.schemas import ExportIn, IdempotencyKey, JobListParams, JobOut

# Named, not derived from the module path: the export's OpenAPI links point at them, wherever the code lives.
GET_JOB = "get_job"
DOWNLOAD_JOB = "download_job"

# Both versions: the same operations, a job's download URL in the version asked. v2 adds the list of one's jobs.
exports_router = Router(tags=["jobs"])
jobs_router = Router(tags=["jobs"])
jobs_list_router = Router(tags=["jobs"])

_DOWNLOAD_CHUNK_BYTES = 256 * 1024


@exports_router.post(
    "",
    auth=jwt_auth,
    response={202: JobOut, **UNAUTHENTICATED, 403: ErrorOut, 409: ErrorOut, **INVALID},
    summary="Export posts to CSV or JSON Lines in the background; watch the job it returns",
    description="`Idempotency-Key`: a retried request with the same key returns the same job (`409` when the key "
    "was used for a different export). The owner's `/ws/notifications/` sockets get a `job` event when it ends.",
    openapi_extra={
        "responses": {
            202: {
                "links": {
                    operation_id: {"operationId": operation_id, "parameters": {"job_id": "$response.body#/id"}}
                    for operation_id in (GET_JOB, DOWNLOAD_JOB)
                }
            }
        }
    },
)
async def create_export(
    request,
    payload: ExportIn,
    response: HttpResponse,
    idempotency_key: IdempotencyKey = None,
):
    job, _ = await sync_to_async(services.export_request)(
        owner=request.auth, fmt=payload.format, scope=payload.scope, idempotency_key=(idempotency_key or "").strip()
    )
    # As it stands now: with eager Celery (the embedded default) the export ran on commit, after `job` was read.
    await job.arefresh_from_db()
    response["Location"] = api_url("job", version=version_of(request), job_id=job.pk)
    return Status(202, selectors.job_payload(job, version=version_of(request)))


@jobs_list_router.get(
    "",
    auth=jwt_auth,
    response={200: CursorPage[JobOut], **UNAUTHENTICATED, **INVALID},
    summary="Your jobs, newest first, by cursor",
)
async def list_jobs(request, params: Query[JobListParams]):
    return await selectors.job_cursor_page(
        owner=request.auth, cursor=params.cursor, limit=params.limit, status=params.status
    )


@jobs_router.get(
    "/{job_id}",
    operation_id=GET_JOB,
    url_name="job",
    auth=jwt_auth,
    response={200: JobOut, **UNAUTHENTICATED, **NOT_FOUND, **INVALID},
    summary="One of your jobs: status and progress",
)
async def get_job(request, job_id: ObjectId):
    job = await selectors.job_get_for_owner(owner=request.auth, job_id=job_id)
    return selectors.job_payload(job, version=version_of(request))


@jobs_router.get(
    "/{job_id}/download",
    operation_id=DOWNLOAD_JOB,
    url_name="job_download",
    auth=jwt_auth,
    response={200: None, **UNAUTHENTICATED, **NOT_FOUND, 409: ErrorOut, **INVALID},
    summary="The file of a succeeded job (409 until it has succeeded)",
    openapi_extra={
        "responses": {
            200: {
                "description": "The exported file",
                "content": {media_type.split(";")[0]: {} for media_type in services.CONTENT_TYPES.values()},
            }
        }
    },
)
async def download_job(request, job_id: ObjectId):
    job = await selectors.job_get_for_owner(owner=request.auth, job_id=job_id)
    if job.status != Job.Status.SUCCEEDED:
        raise Conflict(f"The job is {job.status}; its file is ready once it has succeeded.", code="job_not_ready")
    fmt = job.params["format"]
    try:
        file, size = await sync_to_async(_open_with_size)(job.result_file.name)
    except FileNotFoundError as exc:
        raise NotFound("The job's file is gone.") from exc
    download = StreamingHttpResponse(_chunks(file), content_type=services.CONTENT_TYPES[fmt])
    download["Content-Length"] = str(size)
    download["Content-Disposition"] = f'attachment; filename="posts-export-{job.pk}.{fmt}"'
    download["Cache-Control"] = "private, no-store"
    return download


def _open_with_size(name: str) -> tuple:
    # One thread hop for both: storage calls block.
    file = default_storage.open(name, "rb")
    return file, file.size


async def _chunks(file) -> AsyncIterator[bytes]:
    # An async iterator: Django would read a sync one whole into memory before sending it under ASGI.
    read = sync_to_async(file.read, thread_sensitive=False)
    try:
        while chunk := await read(_DOWNLOAD_CHUNK_BYTES):
            yield chunk
    finally:
        await sync_to_async(file.close, thread_sensitive=False)()
