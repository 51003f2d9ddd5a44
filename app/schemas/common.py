"""Small types shared by several resources."""

from typing import Generic, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")

Dim = int | str | None
"""A tensor dimension: a fixed size, a symbolic name (dynamic), or None (unknown)."""


class TensorInfo(BaseModel):
    name: str
    dtype: str = Field(description="numpy-style dtype name: float32, int64, ...")
    shape: list[Dim] | None = Field(
        description="fixed sizes, or a name/null for dynamic dimensions; null when even the rank is unknown"
    )


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(None, description="pass as ?cursor= to get the next page")


class Problem(BaseModel):
    """RFC 9457 problem details, with our stable `code`."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str
    errors: list[dict[str, str]] | None = None
