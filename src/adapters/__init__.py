"""The domain ports implemented on real technology: the Docker daemon and MinIO (S3) nodes.

docker/      NodeDiscovery through the Docker Engine API
s3/          ObjectStorage on MinIO (S3) nodes
deadline.py  one movable deadline, shared by the S3 uploads and the edge
"""
