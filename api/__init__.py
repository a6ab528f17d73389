"""`korag serve`: the HTTP way in, thin over korag.services.service (as workers/ is for the queue)."""
