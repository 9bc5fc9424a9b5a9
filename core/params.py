"""Reusable request parameter types."""

from typing import Annotated

from ninja import Path

# Ids beyond PostgreSQL's bigint would make the database raise instead of simply finding nothing.
MAX_OBJECT_ID = 2**63 - 1
ObjectId = Annotated[int, Path(ge=1, le=MAX_OBJECT_ID)]
