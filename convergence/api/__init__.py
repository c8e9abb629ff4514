"""The HTTP run door: the old API's pipeline and procedure routes on `convergence serve`, publishing run
requests instead of running pipelines in the request (see convergence/api/door.py)."""

from convergence.api.auth import AuthError, OrgKeyAuth, check_root_key
from convergence.api.door import PREFIX, ApiDoor
from convergence.api.models import RunBody
from convergence.api.ratelimit import Limits, RateLimiter

__all__ = ["PREFIX", "ApiDoor", "AuthError", "Limits", "OrgKeyAuth", "RateLimiter", "RunBody", "check_root_key"]
