"""The domain ports implemented on real technology: the Docker daemon and MinIO (S3) nodes."""
