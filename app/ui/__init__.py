"""The desktop app: everything Qt lives here, and nothing here imports mlx."""
