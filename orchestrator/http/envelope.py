"""The response envelope of both apps, as pure types (clients decode with them too).

Success: `{"success": true, "data": …}`; error: `{"success": false, "error": message,
"code": CODE, "details": …}`, built once, by `orchestrator.http.errors`.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec

T = TypeVar("T")


class Envelope(msgspec.Struct, Generic[T]):
    data: T
    success: bool = True


class ErrorBody(msgspec.Struct):
    error: str
    code: str
    details: Any = None
    success: bool = False
