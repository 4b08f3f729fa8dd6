"""leansip: a lean SIP server and user agent on a sans-I/O core."""

from leansip import _build

_build.select()
