"""The HTTP run door: the old API's pipeline and procedure routes on `convergence serve`, publishing run
requests instead of running pipelines in the request (see api/door.py)."""

from api.auth import AuthError, OrgKeyAuth, check_root_key
from api.door import PREFIX, ApiDoor
from api.models import RunBody
from api.ratelimit import Limits, RateLimiter

__all__ = ["PREFIX", "ApiDoor", "AuthError", "Limits", "OrgKeyAuth", "RateLimiter", "RunBody", "check_root_key"]
