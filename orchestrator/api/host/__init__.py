"""The host's seed endpoints (seed 000: network, …) over the `host` provider type.

`controllers.HOST_CONTROLLERS` are mounted at the root and under `/api/v1`;
`routes.HOST_ENDPOINTS` tells the guard what each route is. (Nothing is imported here:
the guard's table must not pull in the controllers.)
"""
