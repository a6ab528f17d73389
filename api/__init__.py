"""`korag serve`: the HTTP way in, thin over korag.service (as workers/ is for the queue)."""
