"""Object storage: S3-compatible buckets through boto3 (`s3`) and DVC remotes on them (`dvc_remote`)."""
