"""Everything that touches MLX. Never imports Qt: the UI reaches it through app.ui.worker."""
