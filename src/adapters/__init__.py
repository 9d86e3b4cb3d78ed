"""The domain ports implemented on real technology: the Docker daemon, MinIO (S3) nodes, a file.

docker/        NodeDiscovery through the Docker Engine API
s3/            ObjectStorage on MinIO (S3) nodes
deadline.py    one movable deadline, shared by the S3 uploads and the edge
token_file.py  CredentialStore as one JSON file (GATEWAY_AUTH_TOKENS_FILE), written atomically
"""
