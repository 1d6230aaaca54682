"""Where the searches run: in this process (backend), or on Ray workers (ray_backend, ray_worker, ray_parcel)."""
